#!/usr/bin/env bash
# Runs the sandbox's cgroup-dependent tests on a real kernel whose only cgroup
# hierarchy is cgroup2: this machine mounts v1 controllers, so the v2 code
# path would otherwise never run. A QEMU guest boots Debian's kernel with
# a busybox initramfs, sees this host's root read-only over 9p (so it runs the
# binaries built here, with this host's tools), mounts cgroup2 alone and puts
# the tests in a delegated, non-root cgroup, as systemd's Delegate=yes does.
#
# Usage: scripts/cgroup2-vm.sh [stable|backports|all]: Debian's stable
# kernel (6.1 on bookworm), the newer one from backports, or both (default).
# Needs root; downloads are kept in $HOME/.cache/codexos/vm, the guest's logs
# in its last-<kernel> folder. Exits non-zero when a test fails in the guest
# or the guest does not finish.
set -euo pipefail

flavour=${1:-all}
if [ "$flavour" = all ]; then
    failed=0
    for one in stable backports; do bash "$0" "$one" || failed=1; done
    exit $failed
fi
repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${CODEXOS_VM_CACHE:-$HOME/.cache/codexos/vm}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/codexos/target} CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
say() { echo "cgroup2-vm: $*" >&2; }
mkdir -p "$cache"

# Host tools, from Debian's packages.
if ! command -v qemu-system-x86_64 >/dev/null || ! dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q installed; then
    say "installing qemu-system-x86 and busybox-static"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends qemu-system-x86 busybox-static
fi

# Debian's kernel package, downloaded and unpacked, never installed.
apt=(-o APT::Sandbox::User=root)
case $flavour in
stable) ;;
backports)
    # <codename>-backports through a private apt state: the host's sources stay as they are.
    . /etc/os-release
    mirror=$(apt-get indextargets --format '$(REPO_URI)' "Codename: $VERSION_CODENAME" 'Identifier: Packages' | head -n1)
    [ -n "$mirror" ] || { say "no apt source for $VERSION_CODENAME to take the backports mirror from"; exit 1; }
    mkdir -p "$cache/apt/lists/partial"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $VERSION_CODENAME-backports main" >"$cache/apt/backports.list"
    apt+=(-o Dir::Etc::SourceList="$cache/apt/backports.list" -o Dir::Etc::SourceParts=/dev/null -o Dir::State::Lists="$cache/apt/lists")
    apt-get "${apt[@]}" update -q >/dev/null
    ;;
*) say "unknown kernel '$flavour' (stable, backports or all)"; exit 2 ;;
esac
image=$(apt-cache "${apt[@]}" depends linux-image-amd64 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }')
if [ -z "$image" ]; then
    apt-get "${apt[@]}" update -q >/dev/null
    image=$(apt-cache "${apt[@]}" depends linux-image-amd64 | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }')
fi
kdir=$cache/$image
if [ ! -d "$kdir/boot" ]; then
    say "downloading $image"
    (cd "$cache" && apt-get "${apt[@]}" download -q "$image")
    rm -rf "$kdir.tmp" && dpkg-deb -x "$cache/${image}"_*.deb "$kdir.tmp" && mv "$kdir.tmp" "$kdir"
    rm -f "$cache/${image}"_*.deb
fi
vmlinuz=$(ls "$kdir"/boot/vmlinuz-*)

# The binaries the guest runs, built here.
cd "$repo"
say "building the tests"
tests=$(cargo test -q -p codexos-sandbox --no-run --message-format=json-render-diagnostics)
unit=$(grep -o '"executable":"[^"]*/deps/codexos_sandbox-[^"]*"' <<<"$tests" | cut -d'"' -f4 | tail -n1)
suite=$(grep -o '"executable":"[^"]*/deps/all-[^"]*"' <<<"$tests" | cut -d'"' -f4 | tail -n1)
cargo build -q -p codexos-cli
codexos=$CARGO_TARGET_DIR/debug/codexos
for binary in "$unit" "$suite" "$codexos"; do [ -x "$binary" ] || { say "no test binary found ($binary)"; exit 1; }; done

# The initramfs: busybox, the modules for virtio-pci and 9p (modules on
# Debian's kernels), loaded in the order their depends= fields give.
work=$(mktemp -d "$cache/run.XXXXXX")
trap 'rm -rf "$work"' EXIT
stage=$work/initramfs
mkdir -p "$stage"/{bin,lib,proc,sys,dev,host} "$work/results"
cp /bin/busybox "$stage/bin/busybox"
order=""
add_module() {
    case " $order " in *" $1 "*) return ;; esac
    local file dep
    file=$(find "$kdir/lib/modules" -name "$1.ko" -o -name "$1.ko.xz" | head -n1)
    [ -n "$file" ] || return 0 # built into the kernel
    case $file in *.xz) xz -dc "$file" >"$stage/lib/$1.ko" ;; *) cp "$file" "$stage/lib/$1.ko" ;; esac
    for dep in $(tr '\0' '\n' <"$stage/lib/$1.ko" | sed -n 's/^depends=//p' | tr ',' ' '); do add_module "$dep"; done
    order="$order $1"
}
for module in virtio_pci 9pnet_virtio 9p; do add_module "$module"; done

cat >"$stage/env" <<EOF
MODULES="$order"
UNIT="$unit"
SUITE="$suite"
CODEXOS="$codexos"
HOST_PATH="$PATH"
EOF
# Stage one (busybox, in the initramfs): modules and mounts, then
# switch_root, not chroot: the kernel refuses user namespaces in a chroot.
cat >"$stage/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
. /env
mount -t proc proc /proc && mount -t sysfs sys /sys && mount -t devtmpfs dev /dev
for module in $MODULES; do insmod /lib/$module.ko; done
# cache=loose keeps one inode per file, which Landlock's rules hold on to.
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 hostroot /host
R=/host
mount -t proc proc $R/proc && mount -t sysfs sys $R/sys && mount -t devtmpfs dev $R/dev
mkdir -p $R/dev/pts $R/dev/shm && mount -t devpts devpts $R/dev/pts && mount -t tmpfs tmpfs $R/dev/shm
for dir in tmp var/tmp run; do mount -t tmpfs tmpfs $R/$dir; done
# cgroup2 only: the kernel runs with cgroup_no_v1=all.
mount -t cgroup2 -o nsdelegate,memory_recursiveprot cgroup2 $R/sys/fs/cgroup
mkdir -p $R/run/vm/results && mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 results $R/run/vm/results
cp /env /stage2 $R/run/vm/
exec switch_root /host /bin/sh /run/vm/stage2
EOF
# Stage two (the host's root, as PID 1): the tests, each in a service
# cgroup with the controllers enabled down to it, as systemd sets one up.
cat >"$stage/stage2" <<'EOF'
. /run/vm/env
C=/sys/fs/cgroup
echo '+memory +pids +cpu' >$C/cgroup.subtree_control
mkdir -p $C/system.slice
echo '+memory +pids +cpu' >$C/system.slice/cgroup.subtree_control
/bin/busybox ip link set lo up
# run NAME UID COMMAND...: in a service cgroup of its own, owned by UID as
# systemd hands one over, below a shell that waits for it as a wrapper
# script would (so the service's cgroup holds two processes).
run() {
    name=$1 user=$2; shift 2
    service=$C/system.slice/codexos-$name.service
    mkdir $service
    chown $user $service $service/cgroup.procs $service/cgroup.subtree_control $service/cgroup.threads
    sh -c 'echo $$ >'$service'/cgroup.procs && setpriv --reuid='$user' --regid='$user' --clear-groups \
        env -i PATH="$HOST_PATH" HOME=/tmp "$@"; exit $?' -- "$@" >/run/vm/results/$name.log 2>&1
    echo "$name $?" >>/run/vm/results/status
}
export HOST_PATH
run kernel 0 uname -r
run unit 0 "$UNIT" --test-threads=2 probe:: cgroup::
run suite 0 "$SUITE" --test-threads=2 suite::limits suite::escape
run doctor 0 "$CODEXOS" doctor
# Unprivileged, as a User= service or a user's own manager: the binary
# copied out of root's home, the system's python3 first on the PATH.
cp "$SUITE" /tmp/suite && chmod 755 /tmp/suite
HOST_PATH=/usr/bin:/bin:$HOST_PATH
run suite-nobody 65534 /tmp/suite --test-threads=2 suite::limits suite::escape
# Given memory but not pids, doctor must call the cgroups unusable.
mkdir -p $C/partial.slice/codexos.service && echo +memory >$C/partial.slice/cgroup.subtree_control
sh -c 'echo $$ >'$C'/partial.slice/codexos.service/cgroup.procs && exec env -i PATH="$HOST_PATH" HOME=/tmp "$0" doctor' \
    "$CODEXOS" >/run/vm/results/doctor-partial.log 2>&1
grep -q 'unavailable: cgroups.writable' /run/vm/results/doctor-partial.log
echo "doctor-partial $?" >>/run/vm/results/status
# The delegated path was taken (a supervisor leaf in each suite's cgroup),
# and no sandbox cgroup is left behind.
find $C -name 'codexos-sandbox-*' >/run/vm/results/leftovers
result=0
for name in suite suite-nobody; do [ -d $C/system.slice/codexos-$name.service/codexos-supervisor ] || result=1; done
[ -s /run/vm/results/leftovers ] && result=1
echo "cgroups $result" >>/run/vm/results/status
echo finished >>/run/vm/results/status
sync
/bin/busybox poweroff -f
EOF
chmod +x "$stage/init"
(cd "$stage" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1 >"$work/initramfs.gz")

# KVM needs hardware virtualization: a /dev/kvm without vmx or svm (as in our
# Firecracker machines, whose KVM is PVM) boots only PVM-built kernels and
# hangs on Debian's, so emulate (TCG) there: slower, but the same kernel.
if [ -w /dev/kvm ] && grep -qw -e vmx -e svm /proc/cpuinfo; then
    accel=(-accel kvm -cpu host)
else
    accel=(-accel tcg,thread=multi -cpu max)
fi
say "booting $(basename "$vmlinuz") with cgroup2 only (${accel[1]%%,*})"
started=$(date +%s)
timeout 900 qemu-system-x86_64 "${accel[@]}" -smp 2 -m 2048 -nographic -no-reboot -nic none \
    -kernel "$vmlinuz" -initrd "$work/initramfs.gz" \
    -append "console=ttyS0 quiet loglevel=3 panic=-1 cgroup_no_v1=all" \
    -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
    -virtfs "local,path=$work/results,mount_tag=results,security_model=none" \
    >"$work/console.log" 2>&1 || true
say "guest ran for $(($(date +%s) - started))s"

# The verdict: every command ran and exited 0.
out=$cache/last-$flavour
rm -rf "$out" && cp -r "$work/results" "$out" && cp "$work/console.log" "$out/"
for name in unit suite suite-nobody doctor; do
    [ -f "$out/$name.log" ] && grep -E '^test result:|^test .* FAILED$|panicked' "$out/$name.log" | sed "s/^/  $name: /" >&2 || true
done
if ! grep -qx finished "$out/status" 2>/dev/null; then
    say "the guest did not finish; see $out/console.log"
    tail -n 20 "$out/console.log" >&2
    exit 1
fi
say "kernel $(cat "$out/kernel.log"); results in $out"
if grep -v -e finished -e ' 0$' "$out/status" >&2; then
    say "FAILED (exit codes above)"
    exit 1
fi
say "all passed"
