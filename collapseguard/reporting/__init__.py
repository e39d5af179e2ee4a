"""Stage 5 -- the record: alert log, per-check run log and the HTML report built from them."""
