#!/bin/sh
# Build llama.cpp's llama-server from the sources vendored in llama-cpp-python's sdist, so the
# benchmark compares Parley with llama.cpp at the very commit the engine runs (~10 min, 2 cores).
# Usage: bench/build_llama_server.sh [DEST]   then   LLAMA_SERVER_BIN=DEST/bin/llama-server make bench
set -eu
DEST=${1:-.cache/llama-server}
PY=${PYTHON:-.venv/bin/python}
VERSION=$($PY -c "import importlib.metadata as m; print(m.version('llama-cpp-python'))")
mkdir -p "$DEST/src"
$PY -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$DEST/src"
tar -xzf "$DEST/src/llama_cpp_python-$VERSION.tar.gz" -C "$DEST/src"
SRC="$DEST/src/llama_cpp_python-$VERSION/vendor/llama.cpp"
cmake -S "$SRC" -B "$DEST/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF > "$DEST/cmake.log"
cmake --build "$DEST/build" --target llama-server -j "$(nproc)" > "$DEST/build.log"
rm -rf "$DEST/bin" && cp -a "$DEST/build/bin" "$DEST/bin"
echo "LLAMA_SERVER_BIN=$DEST/bin/llama-server"
