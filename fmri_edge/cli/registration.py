"""The session-start command: register (the atlas into the participant's functional space; the
register extra: picsl-greedy)."""

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from fmri_edge.cli.common import app, err, escape, user_errors

PANEL = "Decode (numpy + onnxruntime)"


@app.command(rich_help_panel=PANEL)
def register(
    reference: Annotated[
        Path,
        typer.Argument(
            metavar="REF",
            help="A functional volume of the participant with the "
            "run's slice prescription (3-D NIfTI, the first volume of a 4-D "
            "one, or a DICOM volume .dcm), e.g. the first volume of a short reference scan.",
            show_default=False,
        ),
    ],
    atlas: Annotated[
        Path,
        typer.Option(
            help="The label atlas in MNI space (BN_Atlas_246_1mm.nii.gz).", show_default=False
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="The atlas on the reference's grid (NIfTI, labels), for stream --atlas.",
            show_default=False,
        ),
    ],
    anat: Annotated[
        Optional[Path],
        typer.Option(
            help="The participant's T1 of the same session: the template goes "
            "to the T1 (affine), the T1 to the reference (rigid)."
        ),
    ] = None,
    check: Annotated[
        Optional[Path],
        typer.Option(
            help="Write the atlas's outline on the reference as a PNG, to "
            "check by eye before the scan."
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite --out and --check files.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as one JSON document.")
    ] = False,
):
    """Bring the atlas into the participant's functional space, once per session: the MNI152 2009
    template (shipped with nilearn) registered to REF (affine, mutual information; through --anat's
    T1 when given), the atlas carried across by nearest neighbour, checked, and reported (voxels per
    region, regions lost or too small). Needs pip install 'fmri-edge\\[register]'."""
    with user_errors():
        import numpy as np

        from fmri_edge.imaging.extract import require_nifti

        require_nifti("register", "register")
        from fmri_edge.imaging import register as lib

        lib.require_register()
        from fmri_edge.errors import InputError
        from fmri_edge.model.runtime import Model

        names = Model(None).info.region_names

        def started():
            err.print(
                f"registering the MNI152 template to {escape(reference.name)}"
                + (f" through {escape(anat.name)}" if anat else "")
                + " …",
                highlight=False,
            )

        r = lib.register(
            reference,
            atlas,
            out,
            anat=anat,
            check=check,
            region_names=names,
            force=force,
            on_start=started,
        )
        for n in r.notes:
            err.print(f"[yellow]note:[/] {escape(n)}", highlight=False, soft_wrap=True)
        if as_json:
            print(json.dumps(r.as_dict()))
        else:
            v = r.voxels
            print(
                f"{int((v > 0).sum())} of {len(v)} regions on the grid of {reference.name}: voxels per region "
                f"min {int(v.min())}, median {np.median(v):g}, max {int(v.max())} (registration {r.seconds:.1f} s)"
            )
            if r.small:
                print(
                    f"too small (< {lib.MIN_REGION_VOXELS} voxels): "
                    + ", ".join(f"{n} ({k})" for n, k in r.small)
                )
            if r.lost:
                print(f"lost: {', '.join(r.lost)}")
        if r.overlay:
            err.print(
                f"wrote {escape(str(r.overlay))}: look at it before the scan (the outlines must follow the "
                "brain)",
                highlight=False,
            )
        if r.check is not None:
            raise InputError(
                out,
                f"not written: the registered atlas fails the space check: {r.check}"
                + (f" (see {r.overlay})" if r.overlay else ""),
            )
        err.print(
            f"wrote {escape(str(out))} — next: fmri-edge stream WATCH_DIR --atlas {escape(str(out))} …",
            highlight=False,
        )
