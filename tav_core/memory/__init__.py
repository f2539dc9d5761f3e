"""Planning memory and time before any work: ``trace`` (a stage's code run on fake tensors, its allocation peak and
FLOPs), ``replay`` (repeated UNet passes in a plan replayed), ``stages`` (every stage of a run planned), ``fit``
(the settings that fit the free memory), ``host`` (the machine's free memory). May import every layer up to
``editing`` and the shared leaves."""
