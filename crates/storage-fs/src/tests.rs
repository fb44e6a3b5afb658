//! Unit tests of the internals (name mapping); behaviour tests are in
//! `tests/`.

use super::fsio::{seg_name, sidecar_name, PLAIN_MAX};

#[test]
fn names_never_collide_with_provider_files() {
    assert_eq!(seg_name("avatar.png"), "avatar.png");
    assert_eq!(seg_name("ré sumé.pdf"), "ré sumé.pdf");
    for reserved in [".~m", ".~mavatar.png", ".~t0123", ".~u", ".~h00"] {
        let n = seg_name(reserved);
        assert!(n.starts_with(".~h") && n.len() == 51, "{reserved} -> {n}");
    }
    let long = "k".repeat(PLAIN_MAX + 1);
    assert!(seg_name(&long).starts_with(".~h"));
    assert_eq!(seg_name(&"k".repeat(PLAIN_MAX)), "k".repeat(PLAIN_MAX));
    assert_ne!(seg_name(&long), seg_name(&"k".repeat(PLAIN_MAX + 2)));
    assert!(sidecar_name(&"k".repeat(PLAIN_MAX)).len() <= 255);
    assert!(sidecar_name(&seg_name(&long)).len() <= 255);
}
