//! `Ext4Fs`: open, lookup, read, and every edit; metadata cache and flush. Owner: core.
