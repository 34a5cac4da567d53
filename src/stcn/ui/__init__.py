"""``stcn ui``: interactive video object segmentation in the browser (MiVOS's GUI, served locally).

:mod:`stcn.ui.state` keeps the interactive session (:class:`stcn.interactive.api.InteractiveSession`)
and the propagation job, :mod:`stcn.ui.server` is the Starlette app and its local server,
:mod:`stcn.ui.launch` assembles them from the command's options (:mod:`stcn.commands.ui`); the page
(``static/``) is plain HTML/JS shipped with the package. Needs the ``ui`` extra (``pip install stcn[ui]``).
See docs/ui.md.
"""
