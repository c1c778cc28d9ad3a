import { tf } from '@regkit/core';
import { readmeSnippetTests } from '../../../scripts/readme-snippets.mjs';

// every ts/js snippet of the README runs verbatim (scripts/readme-snippets.mjs)
readmeSnippetTests(new URL('../README.md', import.meta.url), { tf });
