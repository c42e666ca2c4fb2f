# Sourced by scripts/setup.sh: lets a fresh clone reuse the objects an earlier build on this
# machine compiled, through ccache, when ccache is installed (.ci/run installs it). torch's
# extension builder puts ccache in front of c++ and nvcc by itself when ccache is on PATH
# (TORCH_NO_COMPILER_WRAPPER=1 turns that off); without ccache this does nothing.
if command -v ccache >/dev/null 2>&1; then
  # Paths inside the checkout are hashed relative to it, so a clone in another folder can hit.
  export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$PWD}
  # With -g, ccache would also hash the build folder (it lands in the debug info), so a clone's
  # own folder would never hit; the debug info may then name an earlier clone's folder.
  export CCACHE_NOHASHDIR=${CCACHE_NOHASHDIR:-1}
fi
