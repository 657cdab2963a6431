/** The command a build script's shim runs (`rustcbuildx __build-script …`): its own light module, since main.ts checks it before loading anything. */
export const BUILD_SCRIPT_COMMAND = '__build-script';
