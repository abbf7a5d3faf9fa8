"""Safetensors blobs written and read without intermediate copies.

* :mod:`tal.blobs.layout`: plan the layout (header, offsets, size) before any tensor exists,
  allocate one buffer with the header written, hand out typed views for in-place writes.
* :mod:`tal.blobs.reader`: validate a blob's header and read its tensors as zero-copy views.
* :mod:`tal.blobs.io`: ``pack``, ``to_bytes``, ``save_file``, ``write_atomic``,
  ``read_metadata``, ``load_state_dict`` on that layout.
* :mod:`tal.blobs.memory`: fresh buffers on huge pages.
"""
