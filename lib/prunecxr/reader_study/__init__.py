"""The reader study of notebook 07: packets for radiologists, and the analysis of their answers.

Holste et al. (MICCAI 2023, Fig. 6) asked six radiologists about 240 test images, half of them
pruning-identified exemplars (PIEs), and compared PIEs with non-PIEs by Kruskal–Wallis tests.
The responses were never released, and the authors' analysis script decided which image was a
PIE by its row position. This package lets another group run the study for real: it writes one
offline HTML form per reader, reads the CSVs those forms export, joins them with a separate key
*by opaque code*, and tests each question.

Rooms
-----
==================  ============================================================================
:mod:`.design`      which reader sees which image (half PIEs), the opaque codes, the key
:mod:`.packets`     one offline HTML form per reader (``templates/reader_packet.html``)
:mod:`.questions`   the three questions of the form, and how an answer to each is read
:mod:`.answers`     the readers' CSVs read, checked and joined with the key; simulated answers
:mod:`.results`     PIEs against non-PIEs per question, the paper's results beside, Fig. 6
==================  ============================================================================

Files (``runs/<run>/reader_study/``)
------------------------------------
==========================  ===================================================================
``packets/reader-<r>.html`` the form for reader ``reader-<r>`` (``r`` = 1 … ``n_readers``)
``key.csv``                 one row per shown image: ``code``, ``reader``, ``packet_id``,
                            ``position`` (1-based order in the packet), ``image_id``,
                            ``is_pie``. Keep it from the readers.
``study.json``              the design parameters, packet ids and counts
``responses/``              the readers' exported CSVs (real answers; put them here)
``simulated/reader-<r>.csv``  simulated answers, in the same format, written only when
                            ``responses/`` holds no CSV; never mixed with real ones
``answers.parquet``         the validated answers joined with the key: ``reader``, ``code``,
                            ``image_id``, ``is_pie``, ``group``, ``agree`` (1 yes, 0 no),
                            ``quality``, ``difficulty`` (NaN = unanswered), ``file``, ``row``,
                            ``source`` (``readers`` or ``simulated``)
``tests.parquet``           one row per question: ``question``, ``title``, ``n_pie``,
                            ``n_non_pie``, ``mean_pie``, ``sd_pie``, ``mean_non_pie``,
                            ``sd_non_pie``, ``kw_h``, ``kw_p`` (Kruskal–Wallis), ``mwu_u``,
                            ``mwu_p`` (Mann–Whitney U, two-sided), ``welch_t``, ``welch_p``
                            (Welch's t), ``n_readers``, ``n_answers``, ``source``
==========================  ===================================================================

These files are part of the run-directory contract, ``docs/artifacts.md``.
"""

from .answers import ResponseError, SimulationModel, collect_responses, coverage, read_responses
from .design import assign_images, load_pies, read_key
from .packets import write_study
from .results import (
    compare_groups,
    figure_6,
    headline,
    paper_comparison,
    tests_table,
    write_results,
)
from .stratified import stratified_display, stratified_tests, write_stratified

__all__ = [
    "ResponseError",
    "SimulationModel",
    "assign_images",
    "collect_responses",
    "compare_groups",
    "coverage",
    "figure_6",
    "headline",
    "load_pies",
    "paper_comparison",
    "read_key",
    "read_responses",
    "stratified_display",
    "stratified_tests",
    "tests_table",
    "write_results",
    "write_stratified",
    "write_study",
]
