//! Files on this machine: careful reads and atomic writes ([`fs`]), identity files
//! ([`identity_file`]), the admin's trust root ([`trust_root`]) and directory ([`dirstore`], its
//! file names in [`dirpaths`]), and the newest checkpoint a client has seen
//! ([`checkpoint_state`]).

pub mod checkpoint_state;
pub mod cosigner_key;
pub mod directory_seen;
pub mod dirmirror;
pub mod dirpaths;
pub mod dirstore;
pub mod fs;
pub mod identity_file;
pub mod keywatch_state;
pub mod pins;
pub mod provision;
pub mod tree_state;
pub mod trust_root;
