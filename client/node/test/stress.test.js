'use strict';
// The original pool's stress test: 50 Node agent processes x 5 s, zero
// failures (PGB_NODE_STRESS_AGENTS and PGB_NODE_STRESS_SECONDS change it).
const test = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('child_process');
const path = require('path');
const { startBroker, psql } = require('./helpers');

const AGENTS = Number(process.env.PGB_NODE_STRESS_AGENTS || 50);
const SECONDS = Number(process.env.PGB_NODE_STRESS_SECONDS || 5);

test(`${AGENTS} Node agent processes x ${SECONDS} s: zero failures`, { timeout: 300000 }, async (t) => {
  const br = await startBroker(['--pool-size', '10', '--max-pool-size', '20']);
  psql('create table st_log (agent int, n int)');
  try {
    const agent = path.join(__dirname, 'fixtures', 'stress-agent.js');
    const runs = Array.from({ length: AGENTS }, (_, i) => new Promise((resolve) => {
      const p = spawn(process.execPath, [agent, String(SECONDS), String(i)],
        { env: Object.assign({}, process.env, { PGBROKER_DIR: br.dir }), stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      p.stdout.on('data', (d) => { stdout += d; });
      p.stderr.on('data', (d) => { stderr += d; });
      p.on('exit', (code, sig) => resolve({ i, code, sig, stdout, stderr }));
    }));
    const results = await Promise.all(runs);
    let ok = 0;
    let inserted = 0;
    for (const r of results) {
      assert.equal(r.code, 0, `agent ${r.i} exited ${r.code} ${r.sig}: ${r.stderr}`);
      assert.ok(r.stdout.trim(), `agent ${r.i} exited ${r.code} without its report: ${r.stderr}`);
      const o = JSON.parse(r.stdout);
      assert.equal(o.failed, 0, `agent ${r.i}: ${o.errors.join('; ')}`);
      assert.ok(o.ok > 0, `agent ${r.i} did nothing`);
      ok += o.ok;
    }
    inserted = Number(psql('select count(*) from st_log'));
    assert.ok(inserted > 0);
    t.diagnostic(`${AGENTS} agents: ${ok} statements and transactions, ${inserted} rows, 0 failures`);
  } finally {
    psql('drop table if exists st_log');
    await br.stop();
  }
});
