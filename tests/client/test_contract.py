"""The client states the wire contract itself (it does not import the server); these tests hold
its copy to the server's, so the two cannot drift. Also the input forms that need numpy or Pillow,
which the client's own tests (in a venv without them) cannot try."""

from __future__ import annotations

import dataclasses
import io
import re
from pathlib import Path
from typing import get_args

import fillframe_client as fc
import numpy as np
from fillframe_client.inputs import file_part
from PIL import Image
from pydantic import BaseModel

from fillframe import contract
from tests.utils.images import encode, photo


def test_flux_fill_params_are_the_servers() -> None:
    assert list(fc.FLUX_FILL_PARAMS) == list(contract.FluxFillParams.model_fields)
    assert fc.MODEL in contract.MODELS
    assert fc.TERMINAL == contract.TERMINAL
    assert set(fc.contract.STATUSES) == set(get_args(contract.JobStatus))


def snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def test_every_response_field_has_a_typed_attribute() -> None:
    # JSON field -> client attribute, where the name is not the snake-case of the JSON one.
    renamed = {"result": "images"}
    pairs: list[tuple[type[BaseModel], type]] = [
        (contract.JobView, fc.Job),
        (contract.JobList, fc.JobList),
        (contract.UploadView, fc.Upload),
        (contract.MeView, fc.Me),
        (contract.MeUser, fc.User),
        (contract.MeTeam, fc.Team),
        (contract.MeApiKey, fc.KeyInfo),
        (contract.ModelInfo, fc.Model),
        (contract.SubmitResponse, fc.Submission),
    ]
    for view, model in pairs:
        wanted = {renamed.get(name, snake(name)) for name in view.model_fields}
        # What stays in `raw` only: the job's echoed input and engine facts.
        wanted -= {"input", "engine"}
        missing = wanted - fields(model)
        assert not missing, f"{model.__name__} lacks {sorted(missing)} of {view.__name__}"


def test_file_part_takes_pil_images_and_arrays(tmp_path: Path) -> None:
    rgb = photo("coffee", (64, 48))
    name, data, mime = file_part(Image.fromarray(rgb), "image")
    assert (name, mime) == ("image.png", "image/png")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), rgb)
    _, array_png, _ = file_part(rgb[:, :, 0], "mask")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(array_png))), rgb[:, :, 0])
    opened = Image.open(io.BytesIO(encode(rgb)))  # a PngImageFile, a subclass from PIL.PngImagePlugin
    assert file_part(opened, "image")[2] == "image/png"
