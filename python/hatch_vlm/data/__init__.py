"""hatch_vlm.data: multi-view samples for PaStA and ActoR.

    record.Sample                       the record used everywhere (images, depth, K, poses, question)
    synthetic.generate / iter_samples   procedural rooms, ray-cast views, questions with gold answers
    synthetic.SceneConfig               the generator's knobs
    questions                           the question families (FAMILIES, ask)
    spar7m                              SPAR-7M-RGBD as it ships: layout, records, markers, lazy selection
    spar.read_spar_bench / write_spar_bench
    mindcube.read_mindcube / write_mindcube, mmsi.read_mmsi / write_mmsi
    show.draw_sample                    a picture of a sample with its PaStA cell overlaps
    cli.register                        `hatch-vlm data synth`, `hatch-vlm data show`, `hatch-vlm data stats`

Readers return (samples, ReadSummary); bad records are skipped and counted (or raise with
strict=True), never dropped silently.
"""
