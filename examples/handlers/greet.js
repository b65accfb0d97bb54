#!/usr/bin/env node
// A codeq worker handler in Node.js (no packages):
//
//   codeq worker start --events GREET --handler examples/handlers/greet.js
//
// The task JSON arrives on stdin; its "payload" field is itself a JSON
// string. Print one result object on stdout:
//   {"status":"COMPLETED","result":{...}}  or  {"status":"FAILED","error":"..."}
// A thrown error (non-zero exit) has the task retried later, with the end
// of stderr as the reason.
'use strict';

function handle(task) {
  const payload = JSON.parse(task.payload);
  if (typeof payload.name !== 'string' || payload.name === '') {
    return { status: 'FAILED', error: 'payload has no name' };
  }
  return { status: 'COMPLETED', result: { greeting: `Hello, ${payload.name}!` } };
}

let input = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => { input += chunk; });
process.stdin.on('end', () => {
  const task = JSON.parse(input);
  console.error(`greeting for task ${task.id} attempt ${task.attempts}`);
  process.stdout.write(JSON.stringify(handle(task)) + '\n');
});
