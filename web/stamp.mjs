// Write build-stamp.json into the build: the SHA-256 of the frontend's sources, so a test can
// tell whether the committed build matches the committed source (see check_build.py).
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join, relative, sep } from 'node:path';

const here = new URL('.', import.meta.url).pathname;
const SOURCES = ['index.html', 'package.json', 'package-lock.json', 'tsconfig.json', 'vite.config.ts', 'stamp.mjs', 'src'];

function walk(path) {
  return statSync(path).isDirectory() ? readdirSync(path).flatMap((name) => walk(join(path, name))) : [path];
}

const files = SOURCES.flatMap((s) => walk(join(here, s)))
  .map((p) => relative(here, p).split(sep).join('/'))
  .sort();
const total = createHash('sha256');
for (const file of files) {
  const digest = createHash('sha256').update(readFileSync(join(here, file))).digest('hex');
  total.update(`${file}\0${digest}\n`);
}
const stamp = { source_sha256: total.digest('hex'), files: files.length };
writeFileSync(join(here, '../src/truthset/web_dist/build-stamp.json'), JSON.stringify(stamp, null, 2) + '\n');
console.log(`build stamp ${stamp.source_sha256.slice(0, 16)}… over ${stamp.files} files`);
