// Debian's Chromium, started as every page test needs it: headless, as root (no sandbox), and
// with nothing that reaches out of this machine (its closed network refuses those connections).
import { chromium } from 'playwright-core';

export function launchChromium() {
  return chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync',
    ],
  });
}
