#!/bin/sh
# Builds deploy/build/, the code of the ingest function: chunkstore with the `lambda` extra,
# installed from Linux wheels for the function's runtime (run from anywhere; needs pip).
#   PYTHON_VERSION=3.12 PLATFORM=manylinux2014_x86_64 deploy/build.sh
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
python_version=${PYTHON_VERSION:-3.12}
platform=${PLATFORM:-manylinux2014_x86_64}
rm -rf "$here/build" "$here/.wheels"
python3 -m pip wheel --no-deps --wheel-dir "$here/.wheels" "$root"
python3 -m pip install --target "$here/build" --platform "$platform" --python-version "$python_version" \
    --implementation cp --only-binary=:all: "$(ls "$here"/.wheels/chunkstore-*.whl)[lambda]"
rm -rf "$here/.wheels"
echo "built $here/build for Python $python_version on $platform"
