// The package as npm packs it: the files it holds, and that it installs and imports by name.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const packageDir = join(dirname(fileURLToPath(import.meta.url)), '..');

test('npm pack holds the module, its types and its README, and installs as livechat-client', () => {
  const out = mkdtempSync(join(tmpdir(), 'livechat-client-pack-'));
  const [packed] = JSON.parse(execFileSync('npm', ['pack', '--json', '--pack-destination', out], { cwd: packageDir, encoding: 'utf8' }));
  assert.deepEqual(packed.files.map((file) => file.path).sort(), ['README.md', 'livechat.d.ts', 'livechat.js', 'package.json']);

  const project = mkdtempSync(join(tmpdir(), 'livechat-client-use-'));
  writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'uses-livechat', private: true, type: 'module' }));
  execFileSync('npm', ['install', '--offline', '--no-audit', '--no-fund', join(out, packed.filename)], { cwd: project, stdio: 'ignore' });
  const used = execFileSync(process.execPath, ['--input-type=module', '-e', `
    import { LivechatClient, syncState, EMPTY_PRESENCE, VERSION } from 'livechat-client';
    const state = syncState(EMPTY_PRESENCE, { members: 1, users: [{ name: 'Ada', connections: 1 }] });
    console.log(VERSION, typeof LivechatClient, Object.keys(state.users).join());
  `], { cwd: project, encoding: 'utf8' });
  assert.equal(used.trim(), `${packed.version} function n:Ada`);
});
