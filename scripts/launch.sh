# Sourced by the scripts in this folder: the repository, its Python, and how to start N processes.
# Paths given to the scripts are relative to the folder they are run from.
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-$( [ -x "$repo/.venv/bin/python" ] && echo "$repo/.venv/bin/python" || echo python3 )}

# torchrun's own flags: NUM_GPUS processes on this machine; with NNODES > 1 this machine is one of
# NNODES that meet at RDZV_ENDPOINT (host:port of the first machine; RDZV_ID names the run, e.g.
# the Slurm job id), else --standalone. MAX_RESTARTS > 0: how often the worker group is brought
# back after a worker dies (training then continues from the newest complete checkpoint).
torchrun_flags() {
  if [ "${NNODES:-1}" -gt 1 ]; then
    echo --nnodes "$NNODES" --nproc_per_node "${NUM_GPUS:-1}" --rdzv_backend c10d --rdzv_endpoint "$RDZV_ENDPOINT" \
      --rdzv_id "${RDZV_ID:-diff2lip}"
  else
    echo --standalone --nproc_per_node "${NUM_GPUS:-1}"
  fi
  if [ "${MAX_RESTARTS:-0}" -gt 0 ]; then
    echo --max-restarts "$MAX_RESTARTS"
  fi
}

check_nodes() {
  if [ "${NNODES:-1}" -gt 1 ] && [ -z "${RDZV_ENDPOINT:-}" ]; then
    echo "error: NNODES=$NNODES needs RDZV_ENDPOINT=host:port of the first machine (the same on every machine)" >&2
    exit 2
  fi
}

# A fresh store for every attempt of the worker group (guided_diffusion/dist_util.py asks for it
# when several machines may restart).
export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1

# launch ONE_PROCESS_SCRIPT MULTI_PROCESS_SCRIPT [args...]
# NUM_GPUS > 1 or NNODES > 1 starts MULTI_PROCESS_SCRIPT on NUM_GPUS processes per machine with
# LAUNCHER=torchrun (torchrun_flags) or LAUNCHER=mpiexec (the venv's MPICH mpiexec when present).
launch() {
  local single="$repo/$1" multi="$repo/$2"
  shift 2
  check_nodes
  if [ "${NUM_GPUS:-1}" -le 1 ] && [ "${NNODES:-1}" -le 1 ]; then
    exec "$PYTHON" "$single" "$@"
  fi
  case "${LAUNCHER:-torchrun}" in
    # shellcheck disable=SC2046  # the flags are words without spaces
    torchrun) exec "$PYTHON" -m torch.distributed.run $(torchrun_flags) "$multi" "$@" ;;
    mpiexec)
      local mpiexec=${MPIEXEC:-$( [ -x "$repo/.venv/bin/mpiexec" ] && echo "$repo/.venv/bin/mpiexec" || echo mpiexec )}
      exec "$mpiexec" -n "$NUM_GPUS" "$PYTHON" "$multi" "$@" ;;
    *) echo "error: LAUNCHER must be torchrun or mpiexec, got '$LAUNCHER'" >&2; exit 2 ;;
  esac
}

# launch_module MODULE [args...]: as launch, for a command run as `python -m MODULE`
# (scripts.train_syncnet ...); the repository goes on PYTHONPATH so that it runs from any folder.
launch_module() {
  local module=$1
  shift
  export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
  check_nodes
  if [ "${NUM_GPUS:-1}" -le 1 ] && [ "${NNODES:-1}" -le 1 ]; then
    exec "$PYTHON" -m "$module" "$@"
  fi
  case "${LAUNCHER:-torchrun}" in
    # shellcheck disable=SC2046  # the flags are words without spaces
    torchrun) exec "$PYTHON" -m torch.distributed.run $(torchrun_flags) -m "$module" "$@" ;;
    mpiexec)
      local mpiexec=${MPIEXEC:-$( [ -x "$repo/.venv/bin/mpiexec" ] && echo "$repo/.venv/bin/mpiexec" || echo mpiexec )}
      exec "$mpiexec" -n "$NUM_GPUS" "$PYTHON" -m "$module" "$@" ;;
    *) echo "error: LAUNCHER must be torchrun or mpiexec, got '$LAUNCHER'" >&2; exit 2 ;;
  esac
}
