# Sourced by the scripts in this folder: the repository, its Python, and how to start N processes.
# Paths given to the scripts are relative to the folder they are run from.
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-$( [ -x "$repo/.venv/bin/python" ] && echo "$repo/.venv/bin/python" || echo python3 )}

# launch ONE_PROCESS_SCRIPT MULTI_PROCESS_SCRIPT [args...]
# NUM_GPUS > 1 starts MULTI_PROCESS_SCRIPT on NUM_GPUS processes with LAUNCHER=torchrun
# (torchrun --standalone) or LAUNCHER=mpiexec (the venv's MPICH mpiexec when present).
launch() {
  local single="$repo/$1" multi="$repo/$2"
  shift 2
  if [ "${NUM_GPUS:-1}" -le 1 ]; then
    exec "$PYTHON" "$single" "$@"
  fi
  case "${LAUNCHER:-torchrun}" in
    torchrun) exec "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$NUM_GPUS" "$multi" "$@" ;;
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
  if [ "${NUM_GPUS:-1}" -le 1 ]; then
    exec "$PYTHON" -m "$module" "$@"
  fi
  case "${LAUNCHER:-torchrun}" in
    torchrun) exec "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$NUM_GPUS" -m "$module" "$@" ;;
    mpiexec)
      local mpiexec=${MPIEXEC:-$( [ -x "$repo/.venv/bin/mpiexec" ] && echo "$repo/.venv/bin/mpiexec" || echo mpiexec )}
      exec "$mpiexec" -n "$NUM_GPUS" "$PYTHON" -m "$module" "$@" ;;
    *) echo "error: LAUNCHER must be torchrun or mpiexec, got '$LAUNCHER'" >&2; exit 2 ;;
  esac
}
