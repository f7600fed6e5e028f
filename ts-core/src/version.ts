// One version for npm and PyPI: package.json's (setup.py reads the same field for the wheel).
import pkg from '../../package.json' with { type: 'json' };

export const VERSION: string = pkg.version;
export const PROTOCOL_VERSION = [1, 0] as const;
