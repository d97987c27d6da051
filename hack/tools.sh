#!/usr/bin/env bash
# hack/tools.sh builds and caches the pinned tools the e2e suite runs against.
#
# Usage:
#   hack/tools.sh [all]        build every tool that is missing (fast no-op when cached)
#   hack/tools.sh NAME...      build only the named tools (see `hack/tools.sh list`)
#   hack/tools.sh env          print shell exports of the tool paths (builds nothing)
#   hack/tools.sh check        exit non-zero unless every required tool is present
#   hack/tools.sh list         print the tool names and versions
#
# Layout: ${RCUDA_TOOLS:-/var/lib/rcuda-tools}/<name>-<version>/bin/<binary>, with a
# .stamp file beside bin/ that records the build recipe; a tool whose stamp matches its
# recipe and whose binaries exist is not rebuilt. Build output goes to
# <name>-<version>/build.log.
#
# This script is the single source of truth for tool locations: the Makefile evaluates
# `hack/tools.sh env`, and the Go e2e harness (test/e2e/harness) runs the same command.
# Any RCUDA_* variable already set in the environment overrides the default path.
#
# The cache must not live under /tmp: runsc's sentry mounts a tmpfs over /tmp inside
# the sandbox, and a runsc binary under /tmp fails to start sandboxes.
set -euo pipefail

# ---------------------------------------------------------------------------
# Pins (the only place versions are written down).
# ---------------------------------------------------------------------------
CONTAINERD_VERSIONS=(2.4.2 2.3.7) # first one is the default daemon for the e2e suite
RUNSC_VERSION=0.0.0-20260905035102-160fafc42237
CRICTL_VERSION=1.37.0
NERDCTL_VERSION=2.2.2 # newest nerdctl whose source the Go module proxy serves
CNI_PLUGINS_VERSION=1.9.1
# loopback, ptp and host-local for the CRI's pod networks; bridge, portmap, firewall, tuning
# and host-local for nerdctl's default network "bridge" (nerdctl pkg/netutil/netutil_unix.go
# generates bridge+portmap+firewall+tuning, and `nerdctl run` fails without any of them).
CNI_PLUGINS=(main/loopback main/bridge main/ptp ipam/host-local meta/portmap meta/firewall meta/tuning)
# busybox for the test image; criu because containerd 2.4's CRI refuses CheckpointContainer
# unless criu is on PATH (it never runs it for runsc); iptables for the bridge (ipMasq),
# portmap and firewall plugins of nerdctl's default network, which run the iptables command
# (Debian's default, iptables-nft; iptables-legacy works too).
APT_PACKAGES=(busybox-static criu iptables)

TOOLS_DIR=${RCUDA_TOOLS:-/var/lib/rcuda-tools}
case "$TOOLS_DIR" in
/tmp | /tmp/*) echo "tools.sh: RCUDA_TOOLS=$TOOLS_DIR is under /tmp; runsc cannot run from there" >&2; exit 2 ;;
esac

# tool_dir NAME VERSION -> the cache directory of one tool version.
tool_dir() { echo "$TOOLS_DIR/$1-$2"; }

# The tool table, one line per tool:
#   name|version|optional(0/1)|cgo(0/1)|method|module|ldflags|packages|binaries
# method "install" runs `go install module/pkg@version` (the module must have no replace
# directives); method "moddir" downloads the module, copies it to <name>-<version>/src,
# runs prepare_<name> there when such a function exists, and runs `go build` in it with
# the module's own go.mod. Packages are relative to the module ("." is its root).
tool_table() {
	local v
	for v in "${CONTAINERD_VERSIONS[@]}"; do
		echo "containerd|v$v|0|0|install|github.com/containerd/containerd/v2||cmd/containerd cmd/ctr|containerd ctr"
	done
	echo "containerd-shim-runc-v2|v${CONTAINERD_VERSIONS[0]}|0|0|install|github.com/containerd/containerd/v2||cmd/containerd-shim-runc-v2|containerd-shim-runc-v2"
	echo "runsc|v$RUNSC_VERSION|0|0|install|gvisor.dev/gvisor|-X gvisor.dev/gvisor/runsc/version.version=$RUNSC_VERSION|runsc|runsc"
	echo "crictl|v$CRICTL_VERSION|0|0|install|sigs.k8s.io/cri-tools|-X sigs.k8s.io/cri-tools/pkg/version.Version=v$CRICTL_VERSION|cmd/crictl|crictl"
	# nerdctl cannot be `go install`ed: its go.mod replaces mod/tigron (a nested module)
	# with ./mod/tigron, which `go install` refuses, and the proxy answers 403 for its
	# @v/list, which `go install` reads to check deprecations. Built inside a copy of the
	# module instead (see prepare_nerdctl).
	echo "nerdctl|v$NERDCTL_VERSION|1|0|moddir|github.com/containerd/nerdctl/v2|-X github.com/containerd/nerdctl/v2/pkg/version.Version=v$NERDCTL_VERSION|cmd/nerdctl|nerdctl"
	local pkgs="" bins="" p
	for p in "${CNI_PLUGINS[@]}"; do
		pkgs+="plugins/$p "
		bins+="${p##*/} "
	done
	# Named "cni", not "cni-plugins": checkouts that build the older plugin list into
	# cni-plugins-<version> share the cache, and a stamp that differs is rebuilt.
	echo "cni|v$CNI_PLUGINS_VERSION|0|0|install|github.com/containernetworking/plugins||${pkgs% }|${bins% }"
}

# prepare_nerdctl runs in the copied nerdctl module. The module zip lacks mod/tigron (a
# nested module, so excluded from the zip; the proxy does not serve it either), and only
# cmd/nerdctl/helpers/testing_linux.go, test helpers (NewCosignKeyPair, ComposeUp) that
# nerdctl itself never calls, imports it. Drop that file and the tigron requirement.
prepare_nerdctl() {
	rm -f cmd/nerdctl/helpers/testing_linux.go
	go mod edit -droprequire github.com/containerd/nerdctl/mod/tigron \
		-dropreplace github.com/containerd/nerdctl/mod/tigron
}

# ---------------------------------------------------------------------------
# env: print exports. Must stay cheap: the Go harness runs it once per test binary.
# ---------------------------------------------------------------------------
print_env() {
	local v key
	echo "export RCUDA_TOOLS=$(printf %q "$TOOLS_DIR")"
	echo "export RCUDA_CONTAINERD_VERSIONS=$(printf %q "${CONTAINERD_VERSIONS[*]}")"
	for v in "${CONTAINERD_VERSIONS[@]}"; do
		key=$(echo "$v" | awk -F. '{print $1"_"$2}')
		emit "RCUDA_CONTAINERD_${key}" "$(tool_dir containerd "v$v")/bin/containerd"
		emit "RCUDA_CTR_${key}" "$(tool_dir containerd "v$v")/bin/ctr"
		emit "RCUDA_CONTAINERD_${key}_VERSION" "$v"
	done
	emit RCUDA_SHIM_RUNC_V2 "$(tool_dir containerd-shim-runc-v2 "v${CONTAINERD_VERSIONS[0]}")/bin/containerd-shim-runc-v2"
	emit RCUDA_RUNSC "$(tool_dir runsc "v$RUNSC_VERSION")/bin/runsc"
	emit RCUDA_RUNSC_VERSION "$RUNSC_VERSION"
	emit RCUDA_CRICTL "$(tool_dir crictl "v$CRICTL_VERSION")/bin/crictl"
	emit RCUDA_NERDCTL "$(tool_dir nerdctl "v$NERDCTL_VERSION")/bin/nerdctl"
	emit RCUDA_CNI_BIN_DIR "$(tool_dir cni "v$CNI_PLUGINS_VERSION")/bin"
	emit RCUDA_BUSYBOX "$(command -v busybox 2>/dev/null || echo /bin/busybox)"
	emit RCUDA_CRIU "$(PATH=$PATH:/usr/sbin:/sbin command -v criu 2>/dev/null || echo /usr/sbin/criu)"
}

# emit NAME DEFAULT: export NAME, keeping a value already set in the environment.
emit() {
	local name=$1 def=$2
	echo "export $name=$(printf %q "${!name:-$def}")"
}

# ---------------------------------------------------------------------------
# Building.
# ---------------------------------------------------------------------------
recipe() { # recipe LINE -> the text stored in the stamp
	echo "go=$(go env GOVERSION) $1"
}

is_built() { # is_built LINE
	local name version optional cgo method module ldflags pkgs bins dir b
	IFS='|' read -r name version optional cgo method module ldflags pkgs bins <<<"$1"
	dir=$(tool_dir "$name" "$version")
	[[ -f $dir/.stamp && "$(cat "$dir/.stamp")" == "$(recipe "$1")" ]] || return 1
	for b in $bins; do [[ -x $dir/bin/$b ]] || return 1; done
}

build_one() { # build_one LINE -> 0 ok, 1 failed
	local line=$1 name version optional cgo method module ldflags pkgs bins dir p args=() start moddir
	IFS='|' read -r name version optional cgo method module ldflags pkgs bins <<<"$line"
	dir=$(tool_dir "$name" "$version")
	if is_built "$line"; then
		return 0
	fi
	mkdir -p "$dir"
	rm -rf "$dir/bin.new" "$dir/.stamp"
	start=$(date +%s)
	echo "tools.sh: building $name $version (log: $dir/build.log)" >&2
	# Build outside any module so the project's go.mod does not interfere, and into a
	# fresh directory that replaces bin/ only on success.
	if (
		set -e
		export CGO_ENABLED="$cgo" GOFLAGS=-buildvcs=false
		case "$method" in
		install)
			for p in $pkgs; do args+=("$module/$p@$version"); done
			cd /
			GOBIN="$dir/bin.new" go install -trimpath ${ldflags:+-ldflags "$ldflags"} "${args[@]}"
			;;
		moddir)
			moddir=$(cd / && go mod download -json "$module@$version" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
			[[ -d $moddir ]] || { echo "go mod download $module@$version gave no directory"; exit 1; }
			rm -rf "$dir/src"
			cp -r "$moddir" "$dir/src"
			chmod -R u+w "$dir/src"
			cd "$dir/src"
			if declare -F "prepare_${name//-/_}" >/dev/null; then "prepare_${name//-/_}"; fi
			for p in $pkgs; do args+=("./$p"); done
			mkdir -p "$dir/bin.new"
			go build -trimpath ${ldflags:+-ldflags "$ldflags"} -o "$dir/bin.new/" "${args[@]}"
			cd / && rm -rf "$dir/src"
			;;
		*) echo "unknown build method $method"; exit 1 ;;
		esac
	) >"$dir/build.log" 2>&1; then
		rm -rf "$dir/bin"
		mv "$dir/bin.new" "$dir/bin"
		recipe "$line" >"$dir/.stamp"
		echo "tools.sh: built $name $version in $(($(date +%s) - start))s" >&2
		return 0
	fi
	rm -rf "$dir/bin.new"
	echo "tools.sh: FAILED to build $name $version after $(($(date +%s) - start))s; last lines of $dir/build.log:" >&2
	tail -n 15 "$dir/build.log" | sed 's/^/    /' >&2
	return 1
}

apt_install() {
	local missing=() p
	for p in "${APT_PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	((${#missing[@]} == 0)) && return 0
	if [[ $(id -u) != 0 ]]; then
		echo "tools.sh: missing Debian packages ${missing[*]}; run as root or: sudo apt-get install -y ${missing[*]}" >&2
		return 1
	fi
	echo "tools.sh: installing Debian packages: ${missing[*]}" >&2
	mkdir -p "$TOOLS_DIR"
	if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
		>"$TOOLS_DIR/apt.log" 2>&1; then
		echo "tools.sh: apt-get failed; last lines of $TOOLS_DIR/apt.log:" >&2
		tail -n 15 "$TOOLS_DIR/apt.log" | sed 's/^/    /' >&2
		return 1
	fi
}

report() {
	# One line per tool with its path (or MISSING).
	local line name version optional cgo method module ldflags pkgs bins dir b state
	while IFS= read -r line; do
		IFS='|' read -r name version optional cgo method module ldflags pkgs bins <<<"$line"
		dir=$(tool_dir "$name" "$version")
		for b in $bins; do
			state=$dir/bin/$b
			is_built "$line" || state="MISSING$([[ $optional == 1 ]] && echo ' (optional)')"
			printf '%-26s %-42s %s\n' "$b" "$name $version" "$state"
		done
	done < <(tool_table)
	for b in busybox criu iptables; do
		state=$(PATH=$PATH:/usr/sbin:/sbin command -v "$b" 2>/dev/null || echo MISSING)
		printf '%-26s %-42s %s\n' "$b" "apt" "$state"
	done
}

main() {
	local cmd=${1:-all} name
	case "$cmd" in
	env)
		print_env
		return 0
		;;
	list)
		tool_table | cut -d'|' -f1,2 | tr '|' ' ' | sort -u
		echo "apt ${APT_PACKAGES[*]}"
		return 0
		;;
	check)
		local line ok=0 p
		while IFS= read -r line; do
			[[ $(cut -d'|' -f3 <<<"$line") == 1 ]] && continue
			is_built "$line" || { echo "tools.sh: missing $(cut -d'|' -f1,2 <<<"$line" | tr '|' ' '); run \`make tools\`" >&2; ok=1; }
		done < <(tool_table)
		for p in "${APT_PACKAGES[@]}"; do
			dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
				{ echo "tools.sh: missing Debian package $p; run \`make tools\`" >&2; ok=1; }
		done
		return $ok
		;;
	esac

	local known
	known=" apt $(tool_table | cut -d'|' -f1 | sort -u | tr '\n' ' ')"
	if [[ $cmd != all ]]; then
		for name in "$@"; do
			[[ $known == *" $name "* ]] || { echo "tools.sh: unknown tool $name; known:$known" >&2; return 2; }
		done
	fi

	command -v go >/dev/null || { echo "tools.sh: go is not on PATH" >&2; return 1; }
	mkdir -p "$TOOLS_DIR"
	# One builder at a time: concurrent `make tools` runs wait instead of racing.
	exec 9>"$TOOLS_DIR/.lock"
	flock 9

	local want=() failed_required=0 line
	[[ $cmd == all ]] || want=("$@")
	if [[ $cmd == all || " ${want[*]} " == *" apt "* ]]; then
		apt_install || failed_required=1
	fi
	while IFS= read -r line; do
		name=$(cut -d'|' -f1 <<<"$line")
		if [[ $cmd != all && " ${want[*]} " != *" $name "* ]]; then
			continue
		fi
		if ! build_one "$line"; then
			[[ $(cut -d'|' -f3 <<<"$line") == 1 ]] || failed_required=1
		fi
	done < <(tool_table)
	report
	return $failed_required
}

main "$@"
