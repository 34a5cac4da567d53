"""Everything that touches disk: frames in, masks in and out, background writers, atomic files.

* :mod:`.frames`: probing, natural-order listing, the one RGB reader, iterating a folder or a video;
* :mod:`.masks`: palette / label PNGs, reading masks and matching them to frames;
* :mod:`.writers`: label-PNG and overlay-video writers on one background worker;
* :mod:`.files`: atomic file writes and atomic folder swaps.

The package sits just above :mod:`stcn.model` and imports nothing from the packages above it
(``inference``, ``eval``, ``data``, ...), which all read and write through it.
"""
