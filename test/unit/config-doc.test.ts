import { expect, test } from 'bun:test';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { configDoc, settingLines } from '../../src/cli/config-doc.ts';
import { loadConfig, SETTINGS } from '../../src/config/config.ts';

test('docs/configuration.md is what `rustcbuildx doc` prints (regenerate: bun src/main.ts doc > docs/configuration.md)', () => {
  expect(readFileSync(join(import.meta.dir, '..', '..', 'docs', 'configuration.md'), 'utf8')).toBe(configDoc());
});

test('the doc names every setting with its variable, and env shows each with its source', () => {
  const doc = configDoc();
  for (const s of SETTINGS) expect(doc).toContain(`| \`${s.key}\` | \`${s.env}\` |`);
  const lines = settingLines(loadConfig({ RUSTCBUILDX_LOG: 'debug', RUSTCBUILDX_BASE_PACKAGES: 'libssl-dev' }));
  expect(lines).toContain('  log             = debug   (environment RUSTCBUILDX_LOG)');
  expect(lines).toContain('  base.packages   = ["libssl-dev"]   (environment RUSTCBUILDX_BASE_PACKAGES)');
  expect(lines).toContain('  runner          = (auto)   (default)');
});
