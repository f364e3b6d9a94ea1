"""The data that synthesis, training and evaluation share: prepared shards (``shards``), the 68-point landmark
scheme and the exact 'detection' of a synthetic face (``landmarks68``), videos prepared into shards
(``prepare``) and the demo recipe's procedural dataset (``demo_dataset``)."""
