//! `free_ranges()`: every free block range for zeroing. Owner: core.
