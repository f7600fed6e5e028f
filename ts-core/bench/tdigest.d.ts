declare module 'tdigest' {
  const pkg: unknown;
  export default pkg;
}
