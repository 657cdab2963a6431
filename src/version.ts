import pkg from '../package.json' with { type: 'json' };

export const NAME = 'rustcbuildx';
export const VERSION: string = pkg.version;
