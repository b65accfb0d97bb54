#!/bin/sh
# A codeq worker handler in plain sh:
#   codeq worker start --events GREET --handler examples/handlers/greet.sh
#
# The task JSON arrives on stdin; the task's id, command and attempt are
# also in CODEQ_TASK_ID, CODEQ_TASK_COMMAND and CODEQ_TASK_ATTEMPT.
# Print one result line on stdout:
#   {"status":"COMPLETED","result":{...}}  or  {"status":"FAILED","error":"..."}
# Exit non-zero (with a reason on stderr) to have the task retried later.
set -eu

task=$(cat)

# The payload is a JSON string inside the task; without jq, pull a simple
# "name" field out of it with sed (use a real JSON parser for real work).
name=$(printf '%s' "$task" | sed -n 's/.*\\"name\\":\\"\([^\\]*\)\\".*/\1/p')
if [ -z "$name" ]; then
  printf '{"status":"FAILED","error":"payload has no name"}\n'
  exit 0
fi

echo "greeting $name (task $CODEQ_TASK_ID, attempt $CODEQ_TASK_ATTEMPT)" >&2
printf '{"status":"COMPLETED","result":{"greeting":"Hello, %s!"}}\n' "$name"
