#!/usr/bin/env bash
# build.sh: build herd-live.iso from Debian's packages and Go alone.
#
#   kernel    Debian's linux-image-*-amd64 (the one linux-image-amd64 depends on),
#             fetched with apt-get download and unpacked with dpkg-deb -x; only
#             the modules for FUSE, TUN, overlay, veth and virtio are kept.
#   userland  busybox-static, our static binaries, the demos (examples/demos).
#   boot      grub-mkrescue: one image that boots BIOS (grub-pc-bin) and UEFI
#             (grub-efi-amd64-bin), console on screen and serial port.
#
# Output: examples/iso/out/herd-live.iso (HERD_ISO_OUT overrides the directory).
# The kernel .deb is cached in out/cache; delete it to fetch a newer one.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${HERD_ISO_OUT:-$here/out}
iso=$out/herd-live.iso
start=$(date +%s)

die() { echo "build.sh: $*" >&2; exit 1; }
# need TOOL PACKAGE: one line naming the package when a tool is missing.
need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found: apt-get install $2"; }

need go "Go 1.26 (https://go.dev/dl, not a Debian package)"
need apt-get apt
need apt-cache apt
need dpkg-deb dpkg
need depmod kmod
need modprobe kmod
need cpio cpio
need xz xz-utils
need grub-mkrescue grub-common
need xorriso xorriso
need mformat mtools
[ -e /usr/lib/grub/i386-pc/boot.img ] || die "GRUB for BIOS not found: apt-get install grub-pc-bin"
[ -e /usr/lib/grub/x86_64-efi/kernel.img ] || die "GRUB for UEFI not found: apt-get install grub-efi-amd64-bin"
busybox=/bin/busybox
if [ "$(dpkg-query -W -f='${Status}' busybox-static 2>/dev/null)" != "install ok installed" ] || [ ! -x $busybox ]; then
	die "static busybox not found: apt-get install busybox-static"
fi

work=$out/work
stage=$work/rootfs
isodir=$work/iso
rm -rf "$work"
mkdir -p "$out/cache" "$stage" "$isodir/boot/grub"

# --- kernel -----------------------------------------------------------------
kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -n "$kpkg" ] || die "linux-image-amd64 unknown to apt: run apt-get update"
deb=$(ls "$out/cache/${kpkg}_"*.deb 2>/dev/null | head -n1 || true)
if [ -z "$deb" ]; then
	echo "== fetching $kpkg (apt-get download)"
	# apt drops privileges to _apt for downloads; a root-owned cache dir only earns a warning.
	(cd "$out/cache" && apt-get download "$kpkg" 2>&1 | grep -v 'unsandboxed as root' || true)
	deb=$(ls "$out/cache/${kpkg}_"*.deb 2>/dev/null | head -n1 || true)
	[ -n "$deb" ] || die "apt-get download $kpkg failed: run apt-get update"
fi
echo "== kernel $(basename "$deb")"
ktree=$work/kernel
dpkg-deb -x "$deb" "$ktree"
kver=$(ls "$ktree/lib/modules")
[ -f "$ktree/boot/vmlinuz-$kver" ] || die "no vmlinuz-$kver in $deb"
cp "$ktree/boot/vmlinuz-$kver" "$isodir/boot/vmlinuz"

# The .deb ships no modules.dep: depmod the unpacked tree, take the closure of
# what we load at boot, copy only that, and depmod the image's tree again so
# busybox modprobe finds the dependencies.
modules="virtio_pci virtio_blk virtio_scsi virtio_net virtio_console fuse tun overlay veth"
depmod -b "$ktree" "$kver"
kmods=$stage/lib/modules/$kver
mkdir -p "$kmods"
for m in $modules; do
	modprobe -d "$ktree" -S "$kver" --show-depends "$m" || die "module $m not in $kpkg"
done | awk '$1 == "insmod" {print $2}' | sort -u | while read -r ko; do
	rel=${ko#"$ktree/lib/modules/$kver/"}
	mkdir -p "$kmods/$(dirname "$rel")"
	cp "$ko" "$kmods/$rel"
done
cp "$ktree/lib/modules/$kver"/modules.builtin* "$ktree/lib/modules/$kver/modules.order" "$kmods/"
depmod -b "$stage" "$kver"
mkdir -p "$stage/etc"
echo "$modules" >"$stage/etc/herd-modules"

# --- userland -----------------------------------------------------------------
mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,usr/local/bin,etc,proc,sys,dev,run,tmp,root,home/demo,mnt,srv,var/log,var/tmp}
chmod 1777 "$stage/tmp" "$stage/var/tmp"
chmod 0700 "$stage/root"
cp $busybox "$stage/bin/busybox"
for applet in $($busybox --list-full); do
	[ -e "$stage/$applet" ] || ln -s /bin/busybox "$stage/$applet"
done
cp -a "$here/rootfs/." "$stage/"
chmod 0755 "$stage/init" "$stage/usr/bin/demo"

# Every main package under cmd/ and examples/, static and stripped.
echo "== go build (static)"
mains=$(cd "$repo" && go list -e -f '{{if eq .Name "main"}}{{.ImportPath}}{{end}}' ./cmd/... ./examples/... 2>/dev/null | sed '/^$/d')
if [ -n "$mains" ]; then
	(cd "$repo" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$stage/usr/local/bin/" $mains) \
		|| die "go build failed (see above)"
	echo "   $(echo $mains | wc -w) programs: $(cd "$stage/usr/local/bin" && echo *)"
else
	echo "   warning: no main packages under cmd/ or examples/"
fi

# The demos and the list the test checks against.
mkdir -p "$stage/usr/share/herd/demos/lib"
cp "$repo"/examples/demos/*.sh "$stage/usr/share/herd/demos/" 2>/dev/null || true
cp "$repo"/examples/demos/lib/*.sh "$stage/usr/share/herd/demos/lib/"
[ -d "$repo/examples/demos/data" ] && cp -a "$repo/examples/demos/data" "$stage/usr/share/herd/demos/"
chmod 0755 "$stage"/usr/share/herd/demos/*.sh 2>/dev/null || true
HERD_DEMO_DIR=$stage/usr/share/herd/demos sh "$stage/usr/bin/demo" list >"$out/demos.list"
[ -s "$out/demos.list" ] || die "no demos in examples/demos"
echo "   demos: $(echo $(cat "$out/demos.list"))"

chmod 0640 "$stage/etc/shadow"
{
	echo
	echo "  herd live: the GNU Hurd's translators and subhurds, on stock Linux"
	echo
	HERD_DEMO_DIR=$stage/usr/share/herd/demos sh "$stage/usr/bin/demo" | sed "s|$stage||; s/^/  /"
	echo
	echo "  You are root; 'su demo' gives a plain user. 'poweroff -f' leaves."
	echo
} >"$stage/etc/motd"

# --- initramfs ----------------------------------------------------------------
compress=${HERD_ISO_COMPRESS:-xz}
echo "== initramfs (cpio, $compress)"
case $compress in
# The kernel's xz decoder wants CRC32 checks. xz -9's 64 MiB window also
# finds the Go runtime and libraries our programs share.
xz) zip="xz -9 --check=crc32 -T0" ;;
gzip) zip="gzip -9" ;;
*) die "HERD_ISO_COMPRESS=$compress: use xz or gzip" ;;
esac
(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R +0:+0 --quiet) \
	| $zip >"$isodir/boot/initrd.img"
# (cpio -R makes every file root's, so a build as a plain user gives the same
# image; /init hands /home/demo to the demo user.)

# --- boot loader --------------------------------------------------------------
cp "$here/grub.cfg" "$isodir/boot/grub/grub.cfg"
echo "herd live ($(cd "$repo" && git rev-parse --short HEAD 2>/dev/null || echo unknown), kernel $kver)" >"$isodir/HERD"
echo "== grub-mkrescue"
rm -f "$iso"
grub-mkrescue --locales= --fonts= --themes= --compress=xz -o "$iso" "$isodir" -- -volid HERD_LIVE >"$work/grub-mkrescue.log" 2>&1 \
	|| { cat "$work/grub-mkrescue.log" >&2; die "grub-mkrescue failed (needs grub-pc-bin, grub-efi-amd64-bin, xorriso, mtools)"; }

size=$(stat -c %s "$iso")
limit=$((64 * 1024 * 1024))
echo "== $iso: $((size / 1024 / 1024)) MiB ($size bytes), built in $(($(date +%s) - start)) s"
echo "   vmlinuz $(($(stat -c %s "$isodir/boot/vmlinuz") / 1024)) KiB, initrd $(($(stat -c %s "$isodir/boot/initrd.img") / 1024)) KiB"
[ "$size" -lt "$limit" ] || die "image is $size bytes, over the 64 MiB budget"
rm -rf "$work"
