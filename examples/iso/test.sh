#!/usr/bin/env bash
# test.sh: boot herd-live.iso headless in qemu, once with BIOS (SeaBIOS) and
# once with UEFI (Debian's OVMF), and check that every demo passed.
#
# How the test picks the demo entry without touching the image: it attaches a
# small FAT disk holding /herd-boot.cfg ("set default=1"), which the image's
# grub.cfg sources when it finds one. Entry 1 boots with herd.demo=all: the
# image runs every demo, prints "HERD-DEMOS: N passed, M failed" on the serial
# console and powers off. N must be the number of demos build.sh put in the
# image (out/demos.list) and M zero.
#
# KVM is used only where hardware KVM is loaded (kvm_intel or kvm_amd); the
# paravirtual /dev/kvm of some cloud machines does not boot Debian's kernel,
# so those get TCG. A boot that has not powered off after HERD_ISO_TIMEOUT
# seconds (600 under TCG, 300 under KVM) is stopped and fails.
#
# Logs: out/console.log (BIOS boot), out/console-uefi.log (UEFI boot).
# HERD_ISO_BOOTS="bios" (or "uefi") boots only one way, for quicker trials.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${HERD_ISO_OUT:-$here/out}
iso=$out/herd-live.iso

die() { echo "test.sh: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found: apt-get install $2"; }

need qemu-system-x86_64 qemu-system-x86
need mformat mtools
need mcopy mtools
[ -f "$iso" ] || die "$iso not found: run make iso first"
[ -s "$out/demos.list" ] || die "$out/demos.list not found: run make iso first"
ndemos=$(grep -c . "$out/demos.list")

ovmf_code= ovmf_vars=
for c in /usr/share/OVMF/OVMF_CODE_4M.fd /usr/share/OVMF/OVMF_CODE.fd; do
	v=${c/CODE/VARS}
	if [ -f "$c" ] && [ -f "$v" ]; then
		ovmf_code=$c ovmf_vars=$v
		break
	fi
done
[ -n "$ovmf_code" ] || die "UEFI firmware not found: apt-get install ovmf"

if [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]; then
	accel=kvm timeout=${HERD_ISO_TIMEOUT:-300}
else
	accel=tcg timeout=${HERD_ISO_TIMEOUT:-600}
fi

tmp=$(mktemp -d)
qemu_pid=
cleanup() {
	[ -z "$qemu_pid" ] || kill "$qemu_pid" 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT

# The disk that chooses grub's entry 1 (herd.demo=all) at once.
printf 'set default=1\nset timeout=0\n' >"$tmp/herd-boot.cfg"
mformat -i "$tmp/choose.img" -C -f 1440 -v HERDBOOT ::
mcopy -i "$tmp/choose.img" "$tmp/herd-boot.cfg" ::/herd-boot.cfg

# boot NAME LOG [QEMU ARGS...]: boot once; 0 if every demo passed.
boot() {
	local name=$1 log=$2
	shift 2
	rm -f "$log"
	: >"$log"
	echo "== boot $name ($accel, timeout ${timeout} s), console: $log"
	local t0 first= kstart= now
	t0=$(date +%s.%N)
	qemu-system-x86_64 -machine pc -accel "$accel" -m 1024 -smp 2 \
		-display none -monitor none -serial "file:$log" -no-reboot \
		-nic none -boot order=d \
		-drive "file=$iso,media=cdrom,if=ide,index=2" \
		-drive "file=$tmp/choose.img,format=raw,if=ide,index=0" \
		"$@" >"$tmp/qemu.out" 2>&1 &
	qemu_pid=$!
	# Watch the log for the first demo (a measurement, not an assertion) and
	# for the end; qemu exits when the image powers off.
	while kill -0 "$qemu_pid" 2>/dev/null; do
		now=$(date +%s.%N)
		if [ -z "$kstart" ] && grep -aq 'Linux version' "$log"; then
			kstart=$(echo "$now - $t0" | awk '{print $1 - $3}')
		fi
		if [ -z "$first" ] && grep -aq '^==> demo ' "$log"; then
			first=$(echo "$now - $t0" | awk '{print $1 - $3}')
		fi
		if awk -v n="$now" -v t="$t0" -v l="$timeout" 'BEGIN { exit !(n - t > l) }'; then
			kill "$qemu_pid" 2>/dev/null || true
			wait "$qemu_pid" 2>/dev/null || true
			qemu_pid=
			echo "test.sh: boot $name did not finish within $timeout s; the console's last lines:" >&2
			tail -n 40 "$log" | sed 's/^/  | /' >&2
			return 1
		fi
		sleep 0.5
	done
	wait "$qemu_pid" || true
	qemu_pid=
	local total
	total=$(echo "$(date +%s.%N) - $t0" | awk '{print $1 - $3}')
	if [ -s "$tmp/qemu.out" ]; then
		sed 's/^/  qemu: /' "$tmp/qemu.out"
	fi
	# A boot quicker than one poll: the first demo came before the end.
	[ -n "$first" ] || ! grep -aq '^==> demo ' "$log" || first="<$(printf '%.0f' "$total")"
	local kfirst
	kfirst=$(sed -n 's/^==> demo .*(uptime \([0-9.]*\) s).*/\1/p' "$log" | head -n1 | tr -d '\r')
	printf '   boot to first demo: %s s wall clock (kernel started after %s s, first demo at kernel uptime %s s); whole boot %.0f s\n' \
		"${first:-?}" "${kstart:-?}" "${kfirst:-?}" "$total"
	local summary
	summary=$(grep -a '^HERD-DEMOS' "$log" | tr -d '\r' || true)
	grep -a '^DEMO .*: ' "$log" | tr -d '\r' | sed 's/^/   /' || true
	if [ -z "$summary" ]; then
		echo "test.sh: boot $name ended without a demo summary; the console's last lines:" >&2
		tail -n 40 "$log" | sed 's/^/  | /' >&2
		return 1
	fi
	echo "$summary" | sed 's/^/   /'
	if ! echo "$summary" | grep -qx "HERD-DEMOS: $ndemos passed, 0 failed"; then
		echo "test.sh: boot $name: expected \"HERD-DEMOS: $ndemos passed, 0 failed\"; the console's last lines:" >&2
		tail -n 60 "$log" | sed 's/^/  | /' >&2
		return 1
	fi
}

st=0
boots=${HERD_ISO_BOOTS:-bios uefi}
case " $boots " in *" bios "*)
	boot BIOS "$out/console.log" || st=1
esac
case " $boots " in *" uefi "*)
	cp "$ovmf_vars" "$tmp/vars.fd"
	boot UEFI "$out/console-uefi.log" \
		-drive "if=pflash,format=raw,unit=0,readonly=on,file=$ovmf_code" \
		-drive "if=pflash,format=raw,unit=1,file=$tmp/vars.fd" || st=1
esac
if [ $st = 0 ]; then
	echo "== iso-test: $ndemos demos passed in BIOS and UEFI boots"
else
	echo "== iso-test: FAILED"
fi
exit $st
