//! Rebuild the eBPF object when the linker changes. Artifact dependencies would express
//! this better but are unstable.
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
