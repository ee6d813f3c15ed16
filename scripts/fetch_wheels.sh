#!/usr/bin/env bash
# Fetch, on a machine with a network, the wheels an offline GPU node needs to run ppo_jax, into
# .whl/ at the repo root; `bash scripts/gpu_check.sh` then installs them offline into .site/.
#
#   bash scripts/fetch_wheels.sh [--torchrl] [--python-version X.Y] [--only PKG[,PKG...]] [--list]
#
# The node is assumed to have Python with JAX (CUDA), flax, optax, chex, orbax-checkpoint, numpy
# (and torch) already: those are never fetched, since a CPU jaxlib in .site/ would shadow the CUDA
# one. What is fetched is MuJoCo, MJX, Brax, distrax, Gymnasium and their small dependencies,
# each at the version installed in this environment (so both machines run the same releases;
# a package not installed here is fetched at its newest release, with a warning), as binary
# wheels for CPython X.Y (default 3.12) on x86-64 Linux, without their dependencies.
#   --torchrl          also TorchRL (torchrl tensordict pyvers orjson); its compiled parts are
#                      built against one torch release, which the node's torch must match
#   --python-version   the node's Python (default 3.12)
#   --only PKG,...     fetch only these (e.g. to redo one that failed)
#   --list             print what would be fetched, fetch nothing
# PYTHON names the interpreter whose installed versions are read (default python3).
set -euo pipefail

usage="usage: bash scripts/fetch_wheels.sh [--torchrl] [--python-version X.Y] [--only PKG[,PKG...]] [--list]"
die() { echo "fetch_wheels.sh: $*" >&2; exit 2; }

pkgs=(mujoco mujoco-core mujoco-studio mujoco-mjx brax distrax tfp-nightly decorator gast jaxopt
      ml-collections tensorboardx trimesh glfw pyopengl flask flask-cors dm-tree gymnasium
      farama-notifications cloudpickle)
torchrl_pkgs=(torchrl tensordict pyvers orjson)
pyver=3.12
only=""
list=0
while [ $# -gt 0 ]; do
  case "$1" in
    --torchrl) pkgs+=("${torchrl_pkgs[@]}") ;;
    --python-version)
      [ $# -ge 2 ] || die "--python-version needs a value such as 3.12 ($usage)"
      pyver=$2; shift ;;
    --python-version=*) pyver=${1#*=} ;;
    --only)
      [ $# -ge 2 ] || die "--only needs a comma-separated list of packages ($usage)"
      only=$2; shift ;;
    --only=*) only=${1#*=} ;;
    --list) list=1 ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
    *) die "unknown argument '$1' ($usage)" ;;
  esac
  shift
done
[[ $pyver =~ ^[0-9]+\.[0-9]+$ ]] || die "--python-version takes X.Y, e.g. 3.12 (got '$pyver')"
if [ -n "$only" ]; then
  IFS=, read -r -a pkgs <<< "$only"
fi
[ ${#pkgs[@]} -gt 0 ] || die "no packages to fetch ($usage)"

PY=${PYTHON:-python3}
command -v "$PY" >/dev/null || die "no '$PY' on PATH (set PYTHON)"
cd "$(dirname "$0")/.."   # the repo root: .whl/ is where gpu_check.sh looks (ignored by git)

# pkg==version for each package, from this environment's installed distributions
mapfile -t specs < <("$PY" - "${pkgs[@]}" <<'EOF'
import importlib.metadata as md, sys
for name in sys.argv[1:]:
    try:
        print(f"{name}=={md.version(name)}")
    except md.PackageNotFoundError:
        print(f"fetch_wheels.sh: {name} is not installed here: fetching its newest release",
              file=sys.stderr)
        print(name)
EOF
)
[ ${#specs[@]} -eq ${#pkgs[@]} ] || die "could not read the installed versions with $PY"

if [ "$list" = 1 ]; then
  printf '%s\n' "${specs[@]}"
  exit 0
fi

fetch() {
  "$PY" -m pip download -q --no-deps --only-binary=:all: \
    --python-version "$pyver" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any \
    -d .whl "$1"
}

mkdir -p .whl
failed=()
fetched=()
for spec in "${specs[@]}"; do
  if fetch "$spec" 2>/dev/null; then
    fetched+=("$spec")
  elif fetch "${spec%%==*}"; then  # again, with pip's message if it fails
    # e.g. a release older than the node's Python has no wheel for it
    [ "${spec%%==*}" = "$spec" ] ||
      echo "fetch_wheels.sh: $spec has no wheel for CPython $pyver: fetched the newest release" >&2
    fetched+=("${spec%%==*}")
  else
    failed+=("$spec")
  fi
done

# One version of each package: gpu_check.sh installs every wheel in .whl/, and two versions
# of one package make that install fail. Older wheels of the packages just fetched go.
[ ${#fetched[@]} -eq 0 ] || "$PY" - "${fetched[@]}" <<'EOF'
import glob, os, re, sys
norm = lambda s: re.sub(r"[-_.]+", "_", s).lower()
for spec in sys.argv[1:]:
    name, _, version = spec.partition("==")
    if not version:
        continue
    for path in glob.glob(os.path.join(".whl", "*.whl")):
        dist, ver = os.path.basename(path).split("-")[:2]
        if norm(dist) == norm(name) and ver != version:
            os.remove(path)
            print(f"fetch_wheels.sh: removed {path} (this environment has {name} {version})",
                  file=sys.stderr)
EOF

n=$(find .whl -maxdepth 1 -type f -name '*.whl' | wc -l)
echo "fetch_wheels.sh: .whl/ holds $n wheels ($(du -sh .whl | cut -f1)) for CPython $pyver, x86-64 Linux"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fetch_wheels.sh: could not fetch: ${failed[*]}" >&2
  exit 1
fi
