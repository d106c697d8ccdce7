# Sourced by the benchmark scripts: the machine and commit lines every published number carries.
# Sets COMMIT (short hash, "-dirty" when the tree has changes) and defines print_machine.

COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git status --porcelain 2>/dev/null)" ]; then
    COMMIT="$COMMIT-dirty"
fi

print_machine() {
    echo "== machine"
    echo "nproc:   $(nproc)"
    echo "cpu:     $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "kernel:  $(uname -srm)"
    echo "memory:  $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "THP:     $(cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null || echo n/a)"
    echo "nofile:  $(ulimit -n) (soft), $(ulimit -Hn) (hard)"
    echo "rustc:   $(rustc --version 2>/dev/null || echo n/a)"
    echo "commit:  $COMMIT"
    echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
}
