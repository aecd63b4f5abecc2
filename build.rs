//! The Node-API link setup only matters for the addon build (`--features napi`);
//! a plain `cargo build` of the Rust library needs nothing from this script.
fn main() {
    #[cfg(feature = "napi")]
    napi_build::setup();
}
