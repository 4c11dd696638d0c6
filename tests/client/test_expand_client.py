"""The Python client's `expand`: mode inferred, sent as fluxFillParams.expand, outpainted."""

from __future__ import annotations

import pytest
from fillframe_client import BadRequestError, Fillframe

from fillframe.imaging.canvas import Expansion, plan_expand
from fillframe.settings import Settings
from tests.utils.images import decode, photo
from tests.utils.servers import LiveServer


def test_expand_through_the_client(live: LiveServer, api_key: str) -> None:
    rgb = photo("chelsea", (96, 64))
    with Fillframe(live.url, api_key) as ff:
        job = ff.edit_and_wait(rgb, prompt="more cat", expand={"top": 32, "right": 40}, output_format="png")
        params = job.raw["input"]["fluxFillParams"]
        assert params["mode"] == "outpaint" and params["expand"]["top"] == 32
        plan = plan_expand(96, 64, Expansion(top=32, right=40), Settings().limits.max_output_pixels)
        out = decode(ff.download(job))
        assert out.shape == (plan.height, plan.width, 3)
        assert (out[plan.y : plan.y + 64, plan.x : plan.x + 96] == rgb).all()
        with pytest.raises(BadRequestError, match="not both"):
            ff.edit(rgb, prompt="x", outpaint="Make square", expand={"left": 16})
