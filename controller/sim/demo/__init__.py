"""`make demo`: the example migration end to end on the simulator gateway, BIND and a git repository."""
