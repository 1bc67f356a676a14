"""The engines a volunteer runs: Tesseract for OCR, llama.cpp for summaries and translations."""
