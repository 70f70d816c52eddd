#!/usr/bin/env bash
# The whole workflow in one SLURM allocation, with a model server of its own on the node (vLLM on a GPU node, or any
# OpenAI-compatible server): the server starts, the coding jobs talk to it on 127.0.0.1, and it stops at the end.
#
#   QUALCODE_SERVER="vllm serve Qwen/Qwen2.5-7B-Instruct --port 8000" \
#     sbatch --gres=gpu:1 --cpus-per-task=8 --mem=32G --time=4:00:00 workflow/slurm/with-server.sh --configfile my.yaml
#
# my.yaml points llm.base_url at http://127.0.0.1:8000/v1 (QUALCODE_SERVER_PORT, default 8000) and names the model
# as the server serves it. Arguments are passed to snakemake. Run it from the repository (the job starts there).
#SBATCH --job-name=qualcode-server
#SBATCH --cpus-per-task=4
set -euo pipefail
PORT=${QUALCODE_SERVER_PORT:-8000}
: "${QUALCODE_SERVER:?set QUALCODE_SERVER to the command that starts the model server (listening on port $PORT)}"
mkdir -p results/logs
# shellcheck disable=SC2086 # the command is given as one string, split into words here
$QUALCODE_SERVER >results/logs/server.log 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true' EXIT
python - "$PORT" "$server" <<'PY'
import os, sys, time, urllib.request
port, pid = sys.argv[1], int(sys.argv[2])
for _ in range(1800):  # large models take minutes to load
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5).read()
        sys.exit(0)
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            sys.exit("the model server stopped before answering; see results/logs/server.log")
        time.sleep(1)
sys.exit("the model server did not answer within 30 minutes; see results/logs/server.log")
PY
snakemake --cores "${SLURM_CPUS_PER_TASK:-1}" "$@"
