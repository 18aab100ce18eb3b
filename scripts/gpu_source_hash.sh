# Sourced by prebuild_gpu_ext.sh and gpu_check.sh: one hash of everything the extension is
# compiled from, so a prebuilt extension is used only for exactly these sources.
rankops_source_hash() {
  find csrc setup.py -type f \( -name '*.h' -o -name '*.cuh' -o -name '*.cpp' -o -name '*.cu' -o -name '*.py' \) -print0 \
    | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1
}
