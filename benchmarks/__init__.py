"""Every benchmark of the toolkit, with one set of timing and memory helpers.

The suite behind ``elpips bench`` (:mod:`.suite`, measuring with :mod:`.measurements`, :mod:`.step_memory`,
:mod:`.precision`, :mod:`.op_profile`; :mod:`.report` writes its Markdown) and the stand-alone measurements, each
runnable as ``python -m elpips.benchmarks.NAME``: :mod:`.barycenter_step_speed`, :mod:`.geodesic_benchmark`,
:mod:`.geodesic_sharding`, :mod:`.batch_scaling`, :mod:`.loss_memory`, :mod:`.loss_compile`,
:mod:`.ensemble_stream_benchmark`, :mod:`.interpolate_benchmark`, :mod:`.crop`, :mod:`.distance_memory`. Timing
helpers live in :mod:`.timing`, peak-memory and child-process helpers in :mod:`.memory`, the inputs (the shipped
examples resized, centre crops) in :mod:`.measurements`, the run's environment in :mod:`.environment`. Nothing
outside this package imports it except the ``bench`` command; it imports no command module.
"""
