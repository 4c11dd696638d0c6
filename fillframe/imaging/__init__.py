"""The image side: fetch (URL guard, data URI), decode, masks, outpaint canvas, encode.

Import the submodules directly: the API process needs only `fetch` and `decode`, and should not
pay for OpenCV, which `canvas` loads.
"""
