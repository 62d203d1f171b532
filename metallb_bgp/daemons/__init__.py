"""The three loops (`run`, `controller`, `speaker`) and what they share (`runtime`); no daemon imports another."""
