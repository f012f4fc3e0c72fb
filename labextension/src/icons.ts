import { LabIcon } from '@jupyterlab/ui-components';

const jobsSvg = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="16" height="16">
  <g class="jp-icon3" fill="#616161">
    <circle cx="5" cy="6" r="2.4"/><circle cx="5" cy="18" r="2.4"/>
    <circle cx="19" cy="6" r="2.4"/><circle cx="19" cy="18" r="2.4"/>
    <rect x="10" y="9.5" width="4" height="5" rx="1"/>
    <path d="M6.8 7.5l3.6 2.6-.7 1-3.6-2.6zM17.2 7.5l.7 1-3.6 2.6-.7-1zM6.1 16.5l3.6-2.6.7 1-3.6 2.6zM17.9 16.5l-.7 1-3.6-2.6.7-1z"/>
  </g>
</svg>`;

const trainSvg = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="16" height="16">
  <g class="jp-icon3" fill="#616161">
    <path d="M4 4l8 5-8 5z"/>
    <circle cx="17" cy="7" r="2.2"/><circle cx="17" cy="17" r="2.2"/><circle cx="9" cy="19" r="2.2"/>
    <path d="M16 9h2v6h-2zM10.5 18l5-1.6.5 1.9-5 1.6z"/>
  </g>
</svg>`;

export const tfJobsIcon = new LabIcon({ name: 'tfk8s:jobs', svgstr: jobsSvg });
export const trainCellIcon = new LabIcon({
  name: 'tfk8s:train',
  svgstr: trainSvg
});
