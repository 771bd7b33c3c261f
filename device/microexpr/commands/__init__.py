"""Sub-commands of ``microexpr``: argument parsing and output only; the work is
done by the stage modules."""
