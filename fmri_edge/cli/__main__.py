from fmri_edge.cli import app

app(prog_name="fmri-edge")
