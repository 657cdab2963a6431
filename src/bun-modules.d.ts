/** Text files bundled into the executable with `import … with { type: 'text' }`. */
declare module '*.proto' {
  const text: string;
  export default text;
}
