"""The journal: the writer applications use, and what reads it back (segments, cursors, reader, watch)."""
