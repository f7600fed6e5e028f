// `tailguard keygen --out PREFIX`: a CURVE key pair for the engine or a client (Z85, zcert format).
// PREFIX.key holds the secret (mode 0600), PREFIX.pub the public key to share.
import { curveAvailable, writeKeyPair } from '../transport/curve.ts';

export interface KeygenOptions {
  out?: string;
}

export async function keygen(opts: KeygenOptions): Promise<void> {
  if (!curveAvailable()) {
    process.stderr.write('tailguard keygen: this libzmq build has no CURVE support (E_CURVE_UNAVAILABLE)\n');
    process.exit(1);
  }
  const k = writeKeyPair(opts.out ?? 'tailguard');
  process.stdout.write(`secret key: ${k.secretFile} (mode 0600, keep it private)\npublic key: ${k.publicFile}\n${k.publicKey}\n`);
}
