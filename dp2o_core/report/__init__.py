"""``RUN/report.html``: a static, self-contained page about one run.

:mod:`~dp2o_core.report.facts` gathers what the run store holds, :mod:`~dp2o_core.report.plots`
draws it with matplotlib into ``RUN/report/``, and :mod:`~dp2o_core.report.page` writes the
HTML that references those plots and the held-out images by relative path.
"""

from dp2o_core.report.page import write_report

__all__ = ["write_report"]
