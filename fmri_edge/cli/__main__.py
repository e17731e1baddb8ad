from fmri_edge.cli import run

run()
