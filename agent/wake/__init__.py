"""The wake word: openWakeWord's models (`wakeword`, with the lean runtime in `oww_lean`, the import
shims `oww_import` and `tflite_compat`), the listener thread fed by the capture (`listener`: the wake
word, and the stop word while the assistant talks or a timer rings), and offline detection for tuning
(`detect`)."""
