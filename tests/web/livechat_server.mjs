// The livechat binary (LIVECHAT_BIN) started for a page test: on port 0 with a fresh data
// directory, its port read back from its log.
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

/** Starts livechat with `args`: `{ process, base }` (`base`: `http://127.0.0.1:PORT`). */
export async function startLivechat(name, args = []) {
  const dataDir = mkdtempSync(join(tmpdir(), `livechat-${name}-`));
  const child = spawn(process.env.LIVECHAT_BIN, ['--bind', '127.0.0.1:0', '--data-dir', dataDir, ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const port = await new Promise((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`livechat exited (${code}) before listening`)));
    createInterface({ input: child.stderr }).on('line', (line) => {
      const match = line.match(/listening on http:\/\/[^:]+:(\d+)/);
      if (match) resolve(Number(match[1]));
    });
  });
  return { process: child, base: `http://127.0.0.1:${port}` };
}
