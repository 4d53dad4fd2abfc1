//! Block and inode allocation (goal-directed, flex_bg aware), free counts. Owner: core.
